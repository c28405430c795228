"""Against a `ray start --head` cluster: `ray job submit` indexing, `serve run` of the YAML, and
CLI commands that find the running owner."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import free_port, make_corpus, ray_processes, wait_for_health, wait_no_ray_processes

pytestmark = pytest.mark.slow  # Ray, servers or subprocesses: minutes

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def head(tmp_path_factory, tiny_clip):
    tmp = tmp_path_factory.mktemp("cluster")
    port, dashboard = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSEARCH_")}
    env.update(PATH=f"{BIN}:{env['PATH']}", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token",
               MSEARCH_DATA_DIR=str(tmp / "data"), MSEARCH_MODELS__CLIP=tiny_clip, MSEARCH_DASHBOARD="false")
    if not (Path.home() / ".ray" / "auth_token").exists():  # a machine that never ran Ray
        subprocess.run([BIN / "ray", "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    subprocess.run(
        [BIN / "ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--num-cpus=2", "--disable-usage-stats"],
        env=env, check=True, capture_output=True, timeout=180,
    )
    try:
        _wait_for_job_server(f"http://127.0.0.1:{dashboard}")
        yield {"tmp": tmp, "env": env, "gcs": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dashboard}"}
    finally:
        subprocess.run([BIN / "ray", "stop", "--force"], env=env, capture_output=True, timeout=120)
        assert not wait_no_ray_processes(), "processes left after ray stop"


def _monitors() -> list[str]:
    """Ray's autoscaler monitors running on this machine (pid and arguments)."""
    return [line.strip() for line in ray_processes() if "ray/autoscaler/_private/monitor.py" in line]


def test_a_driver_that_joined_leaves_the_clusters_monitor_running(head):
    """Only the process that started a cluster kills its monitor as it ends (see
    ``pipelines.cluster.shutdown``): a command that joined a running cluster leaves it alone."""
    before = _monitors()
    assert before, "the head has an autoscaler monitor"
    code = ("from msearch.settings import Settings\n"
            "from pipelines.cluster import connect, shutdown\n"
            "assert connect(Settings()) is False\n"
            "shutdown()\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**head["env"], "MSEARCH_RAY_ADDRESS": head["gcs"]})
    assert out.returncode == 0, out.stderr[-3000:]
    assert _monitors() == before


def _wait_for_job_server(url: str, timeout: float = 120) -> None:
    """`ray start` returns before the dashboard's job server answers."""
    token_file = Path.home() / ".ray" / "auth_token"
    headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"} if token_file.exists() else {}
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = httpx.get(f"{url}/api/jobs/", headers=headers, timeout=5)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the Ray job server did not come up"
        time.sleep(1)


@pytest.fixture(scope="module")
def job(head):
    corpus = make_corpus(head["tmp"] / "corpus")
    out = subprocess.run(
        [BIN / "ray", "job", "submit", "--address", head["dashboard"], "--working-dir", ".", "--",
         "python", "-m", "pipelines.index", str(corpus), "--json"],
        cwd=ROOT, env=head["env"], capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return corpus, out.stdout


def test_job_submit_indexes_the_folder(job):
    _, stdout = job
    assert "succeeded" in stdout
    start = stdout.index('{\n "seen"')
    summary = json.loads(stdout[start:stdout.index("\n}", start) + 2])
    assert summary["seen"] == 12 and summary["indexed"] == 9 and len(summary["failed"]) == 1


def test_cli_uses_the_running_owner(head, job):
    corpus, _ = job
    run = lambda *a: subprocess.run([sys.executable, "-m", "msearch.cli", *a], cwd=ROOT, env=head["env"],
                                    capture_output=True, text=True, timeout=300)
    status = run("status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["points"] == {"clip": 6, "text": 3}
    found = run("search", "finance team travel spending", "--kind", "text", "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)[0]["path"] == str(corpus / "docs" / "budget.md")
    # The job's owner outlives the job (detached) and still holds the data dir.
    info = json.loads((head["tmp"] / "data" / "owner.json").read_text())
    assert info["ray_address"] == head["gcs"]


def test_serve_run_of_the_config_file(head, job, tiny_clip):
    corpus, _ = job
    config = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    port = free_port()
    config["http_options"]["port"] = port
    config["applications"][0]["args"] = {"data_dir": str(head["tmp"] / "data"), "models": {"clip": tiny_clip}}
    path = head["tmp"] / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([BIN / "serve", "run", "--address", head["gcs"], str(path)], cwd=ROOT,
                            env=head["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(url, proc)
        r = httpx.post(f"{url}/api/v1/search", json={"query": "quarterly budget", "kinds": ["text"]}, timeout=60)
        assert r.json()["results"][0]["path"] == str(corpus / "docs" / "budget.md")
    finally:
        subprocess.run([BIN / "serve", "shutdown", "-y", "--address", head["dashboard"]], env=head["env"],
                       capture_output=True, timeout=120)
        proc.terminate()
        proc.wait(timeout=60)
