"""The msearch command as a user runs it (subprocesses)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_corpus, make_settings, wait_no_ray_processes
from msearch.owner import OwnerLock

pytestmark = pytest.mark.slow  # Ray, servers or subprocesses: minutes

ROOT = Path(__file__).resolve().parent.parent
MSEARCH = [sys.executable, "-m", "msearch.cli"]


@pytest.fixture(scope="module")
def cli(tmp_path_factory, tiny_clip):
    tmp = tmp_path_factory.mktemp("cli")
    corpus = make_corpus(tmp / "corpus")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSEARCH_")}
    env.update(MSEARCH_DATA_DIR=str(tmp / "data"), MSEARCH_MODELS__CLIP=tiny_clip, MSEARCH_DASHBOARD="false",
               MSEARCH_RAY_NUM_CPUS="2")

    def run(*args, check=True):
        out = subprocess.run([*MSEARCH, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        if check and out.returncode != 0:
            raise AssertionError(f"msearch {args} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
        return out

    run.env = env
    first = run("index", str(corpus), "--json")
    yield run, corpus, json.loads(first.stdout), tmp / "data"
    assert not wait_no_ray_processes(), "msearch index left Ray processes behind"


def test_index_summary(cli):
    _, _, summary, _ = cli
    assert summary["seen"] == 12 and summary["indexed"] == 9
    assert summary["failed"][0]["path"].endswith("broken.jpg") and summary["failed"][0]["error"]


def test_index_again_reports_unchanged_in_words(cli):
    run, corpus, _, _ = cli
    out = run("index", str(corpus))
    assert "12 files seen: 0 indexed, 9 unchanged, 1 failed, 2 skipped" in out.stdout
    assert "broken.jpg: cannot decode image" in out.stdout


def test_search_json_fields_and_kind_filter(cli):
    run, corpus, _, _ = cli
    results = json.loads(run("search", "quarterly budget", "--kind", "text", "--top-k", "2", "--json").stdout)
    assert results[0]["path"] == str(corpus / "docs" / "budget.md")
    assert all(r["kind"] == "text" for r in results) and len(results) <= 2
    assert set(results[0]) == {"path", "file_id", "kind", "score", "start_s", "end_s", "page", "text", "thumbnail",
                               "modified", "size", "duration_s", "moments"}


def test_search_by_image(cli):
    run, corpus, _, _ = cli
    results = json.loads(run("search", "--image", str(corpus / "photos" / "img1.jpg"), "--json").stdout)
    assert results[0]["path"] == str(corpus / "photos" / "img1.jpg")


def test_human_output(cli):
    run, corpus, _, _ = cli
    # The tiny CLIP has random weights: its best picture for any query ties with the text
    # model's best note in the fused ranking, so the kind is named to keep the first line known.
    out = run("search", "红色汽车", "--kind", "text").stdout
    assert f"text   {corpus / 'docs' / 'rain.txt'}" in out.splitlines()[0]


def test_show_and_status(cli):
    run, corpus, _, _ = cli
    shown = json.loads(run("show", str(corpus / "photos" / "misnamed.txt"), "--json").stdout)
    assert shown["kind"] == "image" and shown["status"] == "indexed" and shown["units"][0]["thumbnail"]
    again = json.loads(run("show", shown["file_id"], "--json").stdout)
    assert again["path"] == shown["path"]
    broken = json.loads(run("show", str(corpus / "broken.jpg"), "--json").stdout)
    assert broken["status"] == "failed" and "cannot decode image" in broken["error"]
    status = json.loads(run("status", "--json").stdout)
    assert status["kinds"]["image"] == {"indexed": 6, "failed": 1}
    assert status["points"] == {"clip": 6, "text": 3}
    assert status["failed"] == [{"path": str(corpus / "broken.jpg"), "error": broken["error"]}]


def test_errors_are_clear(cli):
    run, _, _, _ = cli
    out = run("index", "/no/such/folder", check=False)
    assert out.returncode == 2 and "/no/such/folder: no such file or folder" in out.stderr
    out = run("show", "/no/such/file", check=False)
    assert out.returncode == 1 and "not in the index" in out.stderr
    out = run("search", "x", "--kind", "sculpture", check=False)
    assert out.returncode == 2 and "unknown kind" in out.stderr


def test_a_second_owner_is_refused_at_once(cli):
    run, corpus, _, data_dir = cli
    lock = OwnerLock(make_settings(data_dir)).acquire()
    try:
        out = run("search", "budget", check=False)
        assert out.returncode == 2 and "already owned by another msearch process" in out.stderr
        out = run("index", str(corpus), check=False)
        assert out.returncode == 2 and "already owned by another msearch process" in out.stderr
    finally:
        lock.release()
    assert run("status").returncode == 0


def _answers(index, corpus) -> dict:
    """What an index says to the same questions (scores rounded: float32 vectors travel)."""
    from msearch.query import options

    def brief(page):
        return [(r["path"], round(r["score"], 4), r["start_s"], r["page"], r["modified"], r["size"],
                 [(m["start_s"], m["page"]) for m in r["moments"]]) for r in page["results"]], page["total"]

    image = str(corpus / "photos" / "img1.jpg")
    status = index.status()
    return {
        "text": brief(index.search("quarterly budget", options(kinds=["text"], top_k=3))),
        "filtered": brief(index.search("budget", options(filters={"path_prefix": str(corpus / "docs")}))),
        "paged": brief(index.search("picture", options(kinds=["image"], top_k=2, offset=2))),
        "image": brief(index.search(None, options(top_k=3), image=(corpus / "photos" / "img2.jpg").read_bytes())),
        "similar": brief(index.similar(index.file_id(image), None, None, options(top_k=3))),
        "show": index.show(image)["units"],
        "status": {k: status[k] for k in ("files", "kinds", "points", "failed")},
    }


def test_serve_runs_until_signalled_and_the_cli_uses_it(cli, tiny_clip):
    """And the three ways to reach an index — in this process, a running server's HTTP API, its
    store owner through Ray — give the same answers."""
    import signal

    from conftest import free_port, wait_for_health
    from msearch.client import HttpIndex, local_index
    from pipelines.client import ray_index

    run, corpus, _, data_dir = cli
    settings = make_settings(data_dir, models={"clip": tiny_clip})
    index = local_index(settings)
    try:
        local = _answers(index, corpus)
    finally:
        index.close()
    assert local["text"][0][0][0] == str(corpus / "docs" / "budget.md")
    assert local["similar"][0] and str(corpus / "photos" / "img1.jpg") not in [r[0] for r in local["similar"][0]]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSEARCH_")}
    env.update(MSEARCH_DATA_DIR=str(data_dir), MSEARCH_DASHBOARD="false", MSEARCH_PORT=str(port),
               MSEARCH_MODELS__CLIP=tiny_clip)
    server = subprocess.Popen([*MSEARCH, "serve"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_health(f"http://127.0.0.1:{port}", server)
        runtime = json.loads((data_dir / "owner.json").read_text())
        assert runtime["http"] == f"http://127.0.0.1:{port}"
        found = json.loads(run("search", "quarterly budget", "--kind", "text", "--json").stdout)
        assert found[0]["path"] == str(corpus / "docs" / "budget.md")
        http = HttpIndex(runtime["http"])
        try:
            assert _answers(http, corpus) == local
        finally:
            http.close()
        through_ray = ray_index(settings)
        try:
            assert _answers(through_ray, corpus) == local
        finally:
            through_ray.close()
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=120)[0]
    assert server.returncode == 0, output
    assert not (data_dir / "owner.json").exists()
    assert not wait_no_ray_processes()


def test_serve_indexes_and_follows_the_configured_roots(tmp_path):
    import signal
    import time

    import httpx

    from conftest import free_port, wait_for_health

    root = tmp_path / "watched"
    root.mkdir()
    (root / "first.txt").write_text("the first note, about harbours\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSEARCH_")}
    env.update(MSEARCH_DATA_DIR=str(tmp_path / "data"), MSEARCH_DASHBOARD="false", MSEARCH_PORT=str(port),
               MSEARCH_ROOTS=str(root), MSEARCH_MODELS__CLIP="fake", MSEARCH_MODELS__TEXT="fake",
               MSEARCH_MODELS__CLAP="none", MSEARCH_MODELS__WHISPER="none", MSEARCH_MODELS__COLPALI="none",
               MSEARCH_MODELS__OCR="none")
    server = subprocess.Popen([*MSEARCH, "serve"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"

    def indexed() -> int:
        return httpx.get(f"{url}/api/v1/status", timeout=30).json()["files"].get("indexed", 0)

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 180
        while indexed() != n:
            assert server.poll() is None and time.monotonic() < deadline, f"{indexed()} indexed, not {n}"
            time.sleep(0.5)

    try:
        wait_for_health(url, server)
        wait_for(1)  # the roots are indexed at start
        (root / "second.txt").write_text("a second note, about lighthouses\n")
        wait_for(2)  # and followed
        (root / "first.txt").unlink()
        wait_for(1)
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=120)[0]
    assert server.returncode == 0, output
    assert not wait_no_ray_processes()


def test_verify_repair_sets_a_damaged_shard_aside_and_embeds_its_files_again(cli, tmp_path):
    import shutil

    run, corpus, _, data_dir = cli
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy, ignore=shutil.ignore_patterns("owner.lock", "owner.json"))
    for segment in (copy / "vectors" / "clip" / "segments").iterdir():
        (segment / "segment.json").unlink()
    env_copy = {"MSEARCH_DATA_DIR": str(copy)}

    def run_copy(*args, check=True):
        out = subprocess.run([*MSEARCH, *args], cwd=ROOT, env={**run.env, **env_copy}, capture_output=True,
                             text=True, timeout=600)
        if check and out.returncode != 0:
            raise AssertionError(f"msearch {args} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
        return out

    broken = run_copy("verify", "--json", check=False)
    assert broken.returncode == 1 and "verify --repair" in broken.stdout
    repaired = json.loads(run_copy("verify", "--repair", "--json").stdout)
    assert repaired["verify"]["ok"] and repaired["set_aside"][0].startswith(str(copy / "vectors" / "clip.damaged-"))
    assert repaired["index"]["indexed"] == 6  # the pictures: their CLIP vectors were in the damaged shard
    found = json.loads(run_copy("search", "--image", str(corpus / "photos" / "img1.jpg"), "--json").stdout)
    assert found[0]["path"] == str(corpus / "photos" / "img1.jpg")


def test_a_local_ray_ends_with_its_monitor_killed_first(tmp_path):
    """The process that started a local Ray ends it without Ray's one-second wait for its
    autoscaler monitor (which, stopped after the GCS, cannot exit by itself): the monitor is
    killed before the GCS stops, and nothing of the cluster is left."""
    code = """
import json, sys
from msearch.settings import Settings
from pipelines.cluster import connect, stop_local
from ray._private import ray_constants, worker

settings = Settings()
assert connect(settings) is True
processes = worker._global_node.all_processes
monitor = processes[ray_constants.PROCESS_TYPE_MONITOR][0].process
gcs = processes[ray_constants.PROCESS_TYPE_GCS_SERVER][0].process
order = []
kill = type(monitor).kill
def note_kill(process):
    order.append(("monitor" if process is monitor else "other", gcs.poll() is None))
    kill(process)
type(monitor).kill = note_kill
stop_local(settings)
json.dump({"order": order, "monitor": monitor.returncode, "gcs": gcs.returncode}, sys.stdout)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSEARCH_")}
    env.update(MSEARCH_DATA_DIR=str(tmp_path / "data"), MSEARCH_DASHBOARD="false", MSEARCH_RAY_NUM_CPUS="2")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    ended = json.loads(out.stdout.strip().splitlines()[-1])
    assert ended["order"][0] == ["monitor", True], ended  # killed while the GCS still ran
    assert ended["monitor"] == -9 and ended["gcs"] is not None
    assert not wait_no_ray_processes(), "processes left behind"
