"""A full disk: the data dir on a small tmpfs that fills during a run. The run ends with one clear
message, the index stays consistent (what was indexed before is still found, verify ok), and the
next run after space is freed completes. The same while the embedded engine builds its index."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import index_direct, make_settings, write_image
from msearch.embed.fake import FakeEmbedder
from msearch.errors import DiskFull
from msearch.library import Library
from msearch.search import SearchService

EMBEDDERS = {"clip": FakeEmbedder("clip"), "text": FakeEmbedder("text")}


@pytest.fixture
def small_disk(tmp_path):
    """A 512 MB tmpfs (the tests run as root on the build machines; CI does too)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(disk)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"a tmpfs could not be mounted for the disk-full tests (they need root): {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """A file that leaves ``leave`` bytes free on ``disk``."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(filler, "wb") as f:
        f.truncate(0)
        chunk = b"\0" * (1 << 20)
        left = free - leave
        while left > 0:
            f.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
    return filler


def corpus(root: Path, start: int, n: int) -> None:
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        write_image(root / "photos" / f"img{i:04d}.jpg", seed=i, size=(640, 480))
        words = " ".join(rng.choice(["harbour", "budget", "lighthouse", "river", "storm", "archive"], 300))
        (root / "notes" / f"note{i:04d}.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / "notes" / f"note{i:04d}.txt").write_text(words)


def test_a_run_that_fills_the_disk_stops_with_one_message_and_loses_nothing(tmp_path, small_disk):
    root = tmp_path / "media"
    corpus(root, 0, 10)
    settings = make_settings(small_disk / "data", models={"clip": "fake", "text": "fake"},
                             index={"disk_reserve_mb": 64})
    lib = Library(settings)
    try:
        first = index_direct(lib, settings, [root], EMBEDDERS)
        assert len(first["indexed"]) == 20
        corpus(root, 10, 300)
        filler = fill(small_disk, leave=(64 + 3) << 20)  # the reserve, and 3 MB: not enough for 600 files
        stopped = index_direct(lib, settings, [root], EMBEDDERS)
        error = stopped["summary"]["error"]
        assert error and "is full" in error and "MB free" in error and str(small_disk) in error, error
        assert "MSEARCH_INDEX__DISK_RESERVE_MB" in error and stopped["indexed"]  # some got in before it stopped
        assert lib.verify()["ok"], lib.verify()["problems"][:3]
        service = SearchService(EMBEDDERS, lib, settings)
        found = service.search_image((root / "photos" / "img0003.jpg").read_bytes(), top_k=1)[0]
        assert found["path"] == str(root / "photos" / "img0003.jpg")  # indexed before: still found
        filler.unlink()
        again = index_direct(lib, settings, [root], EMBEDDERS)
        assert again["summary"]["error"] is None and not again.get("failed")
        status = lib.status()
        assert status["files"] == {"indexed": 620} and lib.verify()["ok"]
    finally:
        lib.close()
    reopened = Library(settings)  # what is on the disk opens as it should
    try:
        assert reopened.verify()["ok"] and reopened.status()["files"] == {"indexed": 620}
    finally:
        reopened.close()


def test_a_full_disk_while_the_index_is_built_keeps_the_run_and_the_shard(tmp_path, small_disk):
    from msearch.store.vectors import EdgeStore, PointData, SpaceQuery, point_id

    store = EdgeStore(small_disk / "vectors")
    try:
        store.ensure_space("clip", 512)
        vectors = np.random.default_rng(0).standard_normal((6000, 512)).astype(np.float32)
        for i in range(0, len(vectors), 1000):
            store.upsert("clip", [PointData(point_id(f"h{j}", 0, "clip", "m"), {"content_hash": f"h{j}", "kind": "image"},
                                            vectors[j].tolist()) for j in range(i, i + 1000)])
        store.flush()
        filler = fill(small_disk, leave=1 << 20)  # less than a copy of the shard
        with pytest.raises(DiskFull, match="building the clip index needs a copy of its shard .* MB free"):
            store.optimize()
        assert not list((small_disk / "vectors").glob("clip.*"))  # the partial copy is gone
        assert store.count("clip") == 6000
        hits = store.search([SpaceQuery("clip", vectors[7].tolist(), limit=1)])[0]
        assert hits[0].payload["content_hash"] == "h7"  # searches go on, without the index
        filler.unlink()
        store.optimize()
        assert store._shards["clip"].info().indexed_vectors_count >= 6000
    finally:
        store.close()


@pytest.mark.slow
def test_msearch_index_on_a_full_disk_stops_with_one_message(tmp_path, small_disk):
    """The same through Ray: the store owner refuses the write, the run stops, the command says so."""
    import json
    import sys

    from conftest import ROOT, wait_no_ray_processes

    root = tmp_path / "media"
    corpus(root, 0, 10)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSEARCH_")}
    env.update(MSEARCH_DATA_DIR=str(small_disk / "data"), MSEARCH_MODELS__CLIP="fake", MSEARCH_MODELS__TEXT="fake",
               MSEARCH_MODELS__CLAP="none", MSEARCH_MODELS__WHISPER="none", MSEARCH_MODELS__COLPALI="none",
               MSEARCH_MODELS__OCR="none", MSEARCH_DASHBOARD="false", MSEARCH_RAY_NUM_CPUS="2",
               MSEARCH_INDEX__DISK_RESERVE_MB="64")

    def msearch(*args):
        return subprocess.run([sys.executable, "-m", "msearch.cli", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=600)

    assert msearch("index", str(root)).returncode == 0
    corpus(root, 10, 600)
    # With less than the reserve free, the stores are not even opened: said at once.
    filler = fill(small_disk, leave=8 << 20)
    out = msearch("status")
    assert out.returncode == 2 and "is full" in out.stderr and "DISK_RESERVE_MB" in out.stderr, out.stderr[-2000:]
    assert out.stderr.count("Traceback") == 0
    filler.unlink()
    assert msearch("status").returncode == 0  # opened once, its files are mapped in
    filler = fill(small_disk, leave=(64 + 1) << 20)
    out = msearch("index", str(root), "--json")
    assert out.returncode == 2, out.stderr[-2000:]
    summary = json.loads(out.stdout)
    assert "is full" in summary["error"] and "MB free" in summary["error"]
    assert "is full" in out.stderr and out.stderr.count("Traceback") == 0
    checked = msearch("verify", "--json")
    assert checked.returncode == 0, checked.stderr[-1500:]
    assert json.loads(checked.stdout)["ok"]
    filler.unlink()
    again = msearch("index", str(root), "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(msearch("status", "--json").stdout)["files"] == {"indexed": 1220}
    assert not wait_no_ray_processes()
