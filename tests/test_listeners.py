"""Every listening socket of a running ``msearch serve`` (Ray's, the dashboard's, Serve's proxy
and replicas', the store owner's) is on 127.0.0.1; settings move the ones they name."""

import os
import signal
import subprocess

import httpx
import psutil
import pytest
from conftest import ROOT, free_port, wait_for_health, wait_no_ray_processes

pytestmark = pytest.mark.slow  # Ray, servers or subprocesses: minutes

MSEARCH = str(ROOT / ".venv" / "bin" / "msearch")


def listening(pid: int) -> dict[tuple[str, int], str]:
    """(address, port) -> process name, for every TCP socket that the process ``pid`` and
    every process under it listen on."""
    out = {}
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            cmd = p.cmdline()
            name = cmd[0] if cmd and cmd[0].startswith("ray::") else p.name()
            for c in p.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN:
                    out[(c.laddr.ip, c.laddr.port)] = name
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def test_every_listener_of_a_running_server_is_on_loopback(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "note.txt").write_text("a note about the harbour\n")
    port, dashboard = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSEARCH_")}
    env.update(MSEARCH_DATA_DIR=str(tmp_path / "data"), MSEARCH_PORT=str(port), MSEARCH_DASHBOARD="true",
               MSEARCH_DASHBOARD_PORT=str(dashboard), MSEARCH_ROOTS=str(docs), MSEARCH_MODELS__CLIP="fake",
               MSEARCH_MODELS__TEXT="fake", MSEARCH_MODELS__CLAP="none", MSEARCH_MODELS__WHISPER="none",
               MSEARCH_MODELS__COLPALI="none", MSEARCH_MODELS__OCR="none", MSEARCH_RAY_NUM_CPUS="2")
    server = subprocess.Popen([MSEARCH, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(url, server)
        # Every part at work: a query (proxy, replicas, the owner), the dashboard, the status.
        assert httpx.post(f"{url}/api/v1/search", json={"query": "harbour"}, timeout=60).status_code == 200
        assert httpx.get(f"{url}/api/v1/status", timeout=60).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{dashboard}/api/version", timeout=60).status_code in (200, 401)
        found = listening(server.pid)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=180)
    assert not wait_no_ray_processes(120)  # Ray's agents exit once they see the raylet gone: slow on a busy VM
    ports = {port_ for _, port_ in found}
    assert {port, dashboard} <= ports, found  # the search server and the dashboard are among them
    names = " ".join(found.values())
    assert "gcs_server" in names and "raylet" in names and "ServeReplica" in names, found
    assert len(found) >= 8, found  # Ray's GCS, raylet, agents, workers' gRPC servers, the proxy, ...
    elsewhere = {f"{ip}:{p} ({name})" for (ip, p), name in found.items() 
                 if ip not in ("127.0.0.1", "::ffff:127.0.0.1")}  # the latter: IPv4 loopback on an IPv6 socket
    assert not elsewhere, elsewhere
