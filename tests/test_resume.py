"""kill -9 of the indexing job at several moments, then a rerun: the index equals a clean run's."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, index_direct, make_settings, wait_no_ray_processes, write_image

from msearch.embed.fake import FakeEmbedder
from msearch.library import Library

pytestmark = pytest.mark.slow  # Ray, servers or subprocesses: minutes

MSEARCH = str(ROOT / ".venv" / "bin" / "msearch")
KILL_AFTER_S = [4.0, 7.0, 10.0]


def _env(data_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSEARCH_")}
    env.update(MSEARCH_DATA_DIR=str(data_dir), MSEARCH_MODELS__CLIP="fake", MSEARCH_MODELS__TEXT="fake",
               MSEARCH_MODELS__CLAP="none", MSEARCH_MODELS__WHISPER="none", MSEARCH_MODELS__COLPALI="none",
               MSEARCH_MODELS__OCR="none", MSEARCH_DASHBOARD="false", MSEARCH_RAY_NUM_CPUS="2")
    return env


def _corpus(root: Path) -> Path:
    """120 files: 60 pictures and 60 texts, enough work for a run to be killed in the middle."""
    for i in range(60):
        write_image(root / f"img{i:02d}.png", seed=i)
        (root / f"doc{i:02d}.txt").write_text(f"document {i} about topic {i % 7}\n" * (20 + i))
    return root


def _json(args: list[str], env: dict) -> dict:
    out = subprocess.run([MSEARCH, *args, "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode in (0, 1), out.stderr[-3000:]
    return json.loads(out.stdout)


def test_kill_9_at_any_moment_then_rerun_equals_a_clean_run(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    env = _env(tmp_path / "data")
    killed_at, jobs = [], []
    for after in KILL_AFTER_S:
        job = subprocess.Popen([MSEARCH, "index", str(corpus)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
        jobs.append(job)
        time.sleep(after)
        if job.poll() is None:
            os.kill(job.pid, signal.SIGKILL)  # the driver only: Ray's own processes notice it died
            killed_at.append(after)
        job.wait()
    assert len(killed_at) >= 2, f"runs finished before their kill points ({killed_at}): make the corpus larger"
    try:
        summary = _json(["index", str(corpus)], env)
        status = _json(["status"], env)
        verify = _json(["verify"], env)
    finally:
        # The killed drivers' Ray clusters (their process groups) would linger for a while.
        for job in jobs:
            try:
                os.killpg(job.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert not wait_no_ray_processes(60)
    assert not summary["failed"] and not summary["skipped"]
    assert summary["indexed"] + summary["unchanged"] == 120
    assert status["files"] == {"indexed": 120}  # none pending, none half-indexed
    assert verify["ok"], verify["problems"]

    # A clean run of the same files, in this process, gives the same points.
    clean = make_settings(tmp_path / "clean", models={"clip": "fake", "text": "fake"})
    lib = Library(clean)
    try:
        index_direct(lib, clean, [corpus], {"clip": FakeEmbedder("clip"), "text": FakeEmbedder("text")})
        want = lib.status()["points"]
    finally:
        lib.close()
    assert status["points"] == want and verify["points"] == sum(want.values())


def test_an_embedding_actor_killed_mid_run_is_replaced_and_nothing_is_lost(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    env = _env(tmp_path / "data")
    job = subprocess.Popen([MSEARCH, "index", str(corpus), "--json"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    # Killed while it embeds a batch (its title names the method it runs): a run with the free
    # models may end within a second of the actor's start.
    killed = _kill_when_seen(job, "ray::MapWorker(MapBatches(EmbedUnits)).submit", 0.0)
    out, _ = job.communicate(timeout=600)
    assert killed, "the embedding actor was never seen embedding"
    summary = json.loads(out)
    assert summary["indexed"] == 120 and not summary["failed"], summary["failed"][:3]
    verify = _json(["verify"], env)
    assert verify["ok"], verify["problems"]
    assert not wait_no_ray_processes(60)


def _titled(tag: str) -> list[int]:
    """The processes whose title (command line) starts with ``tag``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(tag.encode()):
                    found.append(int(entry.name))
            except OSError:  # it ended meanwhile
                pass
    return found


def _kill_when_seen(job: subprocess.Popen, tag: str, after_s: float) -> int | None:
    """SIGKILL the first process that has had the title ``tag`` for ``after_s`` (Ray gives a worker
    that finished its task the next one, of any kind: a title seen once may be gone)."""
    deadline = time.monotonic() + 120
    since: dict[int, float] = {}  # pid -> when it was first seen with the title, without a break
    while job.poll() is None and time.monotonic() < deadline:
        now = time.monotonic()
        since = {pid: since.get(pid, now) for pid in _titled(tag)}
        for pid, first in since.items():
            if now - first >= after_s:
                try:
                    os.kill(pid, signal.SIGKILL)
                    return pid
                except ProcessLookupError:
                    pass
        time.sleep(0.01)
    return None


def _clean_points(tmp_path: Path, corpus: Path) -> dict:
    clean = make_settings(tmp_path / "clean", models={"clip": "fake", "text": "fake"})
    lib = Library(clean)
    try:
        index_direct(lib, clean, [corpus], {"clip": FakeEmbedder("clip"), "text": FakeEmbedder("text")})
        return lib.status()["points"]
    finally:
        lib.close()


@pytest.mark.parametrize("victim", ["ray::Write", "ray::MapBatches(hash_and_claim)", "ray::StoreOwner"])
def test_a_task_or_the_store_owner_killed_mid_run_loses_nothing(tmp_path, victim):
    """A write task killed mid-batch is retried by Ray (writes are idempotent); so is a hash and
    decode task killed after its claim (the retry's claim hands out again what the first decode
    did not deliver). The store owner killed mid-write is restarted by Ray, and whatever the run
    then says, a rerun leaves the index equal to a clean run's, with nothing pending."""
    corpus = _corpus(tmp_path / "corpus")
    env = {**_env(tmp_path / "data"), "MSEARCH_INDEX__WRITE_BATCH_SIZE": "8", "MSEARCH_INDEX__HASH_BATCH_SIZE": "8"}
    job = subprocess.Popen([MSEARCH, "index", str(corpus), "--json"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        # A task mid-batch (a hash task a moment in, once it has likely claimed), the owner a while in.
        killed = _kill_when_seen(job, victim, {"ray::Write": 0.0, "ray::StoreOwner": 0.3}.get(victim, 0.05))
        out, _ = job.communicate(timeout=600)
        assert killed, f"{victim} was never seen running"
        if victim != "ray::StoreOwner":  # the task is retried: this very run indexes everything
            summary = json.loads(out)
            assert summary["indexed"] == 120 and not summary["failed"], summary["failed"][:3]
        summary = _json(["index", str(corpus)], env)
        status = _json(["status"], env)
        verify = _json(["verify"], env)
    finally:
        try:
            os.killpg(job.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        assert not wait_no_ray_processes(60)
    assert not summary["failed"] and summary["indexed"] + summary["unchanged"] == 120
    assert status["files"] == {"indexed": 120} and verify["ok"], verify["problems"]
    assert status["points"] == _clean_points(tmp_path, corpus)
