"""Three Ray nodes on 127.0.0.1: the head holds the data dir, one node has CPUs, one declares a
GPU. `ray job submit` of the indexing job places the embedding actor on the GPU node, CPU stages
on the other nodes too and the store owner on the head; the index equals a one-process run's,
point for point."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port, index_direct, make_corpus, make_settings, wait_no_ray_processes
from test_cluster import _wait_for_job_server

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

_STATE = """
import json
from ray.util.state import list_actors, list_nodes, list_tasks
address = {gcs!r}
nodes = {{n.node_id: n.resources_total for n in list_nodes(address=address)}}
actors = [{{"class": a.class_name, "name": a.name, "node": a.node_id}} for a in list_actors(address=address, limit=10000)]
tasks = [{{"name": t.name, "node": t.node_id, "type": str(t.type)}} for t in list_tasks(address=address, limit=10000, detail=True)]
print(json.dumps({{"nodes": nodes, "actors": actors, "tasks": tasks}}))
"""


def _free_gcs_port() -> int:
    """A free port outside Ray's worker port range (10002-19999)."""
    while True:
        port = free_port()
        if not 10002 <= port <= 19999:
            return port


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nodes")
    port, dashboard = _free_gcs_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSEARCH_", "RAY_ENABLE_WINDOWS_OR_OSX"))}
    env.update(PATH=f"{BIN}:{env['PATH']}", RAY_AUTH_MODE="token", MSEARCH_DATA_DIR=str(tmp / "data"),
               MSEARCH_MODELS__CLIP="fake", MSEARCH_MODELS__TEXT="fake", MSEARCH_MODELS__CLAP="none",
               MSEARCH_MODELS__WHISPER="none", MSEARCH_MODELS__COLPALI="none", MSEARCH_MODELS__OCR="none",
               MSEARCH_DASHBOARD="false", MSEARCH_INDEX__EMBED_NUM_GPUS="1", MSEARCH_INDEX__HASH_BATCH_SIZE="8")
    if not (Path.home() / ".ray" / "auth_token").exists():  # a machine that never ran Ray
        subprocess.run([BIN / "ray", "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    ray = lambda *a: subprocess.run([BIN / "ray", *a], env=env, check=True, capture_output=True, timeout=180)  # noqa: E731
    ray("start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}", "--num-cpus=1", "--disable-usage-stats")
    try:
        gcs = f"127.0.0.1:{port}"
        ray("start", f"--address={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=2")
        ray("start", f"--address={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=1")
        _wait_for_job_server(f"http://127.0.0.1:{dashboard}")
        yield {"tmp": tmp, "env": env, "gcs": gcs, "dashboard": f"http://127.0.0.1:{dashboard}"}
    finally:
        subprocess.run([BIN / "ray", "stop", "--force"], env=env, capture_output=True, timeout=120)
        assert not wait_no_ray_processes(), "processes left after ray stop"


def test_the_job_spreads_over_three_nodes_and_equals_a_one_process_run(cluster, tmp_path):
    corpus = make_corpus(cluster["tmp"] / "corpus")
    for i in range(40):  # enough files for several blocks
        (corpus / "notes" / f"note{i}.txt").parent.mkdir(exist_ok=True)
        (corpus / "notes" / f"note{i}.txt").write_text(f"note {i} about the harbour, the ferry and rain number {i}\n")
    job = subprocess.run(
        [BIN / "ray", "job", "submit", "--address", cluster["dashboard"], "--working-dir", ".", "--",
         "python", "-m", "pipelines.index", str(corpus), "--json"],
        cwd=ROOT, env=cluster["env"], capture_output=True, text=True, timeout=900)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    start = job.stdout.index('{\n "seen"')
    summary = json.loads(job.stdout[start:job.stdout.index("\n}", start) + 2])
    assert summary["indexed"] == 49 and len(summary["failed"]) == 1, summary

    state = subprocess.run([sys.executable, "-c", _STATE.format(gcs=cluster["gcs"])], env=cluster["env"],
                           capture_output=True, text=True, timeout=300)
    assert state.returncode == 0, state.stderr[-3000:]
    state = json.loads(state.stdout.strip().splitlines()[-1])
    gpu_node = next(n for n, res in state["nodes"].items() if res.get("GPU"))
    head = next(n for n, res in state["nodes"].items() if res.get("CPU") == 1 and not res.get("GPU"))
    # A job on a cluster that outlives it embeds with kept embedding actors (pipelines.kept).
    embedders = [a for a in state["actors"] if a["class"] == "EmbedService"]
    assert embedders and {a["node"] for a in embedders} == {gpu_node}, embedders
    owner = [a for a in state["actors"] if a["class"] == "StoreOwner"]
    assert [a["node"] for a in owner] == [head]
    cpu_stages = [t for t in state["tasks"] if "hash_and_claim" in t["name"] or "decode" in t["name"]
                  or t["name"].startswith("Write")]
    nodes = {t["node"] for t in cpu_stages}
    assert len(nodes) >= 2 and nodes - {head}, [(t["name"], t["node"]) for t in state["tasks"]]

    verify = subprocess.run([sys.executable, "-m", "msearch.cli", "verify", "--json"], cwd=ROOT, env=cluster["env"],
                            capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"], verify.stdout + verify.stderr
    stop = subprocess.run([sys.executable, "-c", "import ray; from msearch.settings import load_settings; "
                           "from pipelines.owner import stop_owner; ray.init(address='auto', namespace='msearch'); "
                           "stop_owner(load_settings())"], cwd=ROOT, env={**cluster["env"], "RAY_ADDRESS": cluster["gcs"]},
                          capture_output=True, text=True, timeout=300)
    assert stop.returncode == 0, stop.stderr[-3000:]

    from msearch.embed.fake import FakeEmbedder
    from msearch.library import Library

    def point_ids(lib):
        return {space: sorted(h.id for h in lib.vectors.scroll(space)) for space in lib.spaces()}

    job_lib = Library(make_settings(cluster["tmp"] / "data", models={"clip": "fake", "text": "fake"}))
    try:
        on_cluster = point_ids(job_lib)
    finally:
        job_lib.close()
    one = Library(make_settings(tmp_path / "one", models={"clip": "fake", "text": "fake"}))
    try:
        index_direct(one, one.settings, [corpus], {r: FakeEmbedder(r) for r in ("clip", "text")})
        assert point_ids(one) == on_cluster and sum(map(len, on_cluster.values())) > 45
    finally:
        one.close()
