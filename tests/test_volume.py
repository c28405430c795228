"""Freshness at volume: over a thousand file-system changes in bursts (creates, saves, renames,
deletes, folders moved in, out and around, a folder replaced by a file of its name) under
``msearch watch`` and under ``msearch serve`` with MSEARCH_ROOTS; after them the catalog equals
the disk, nothing that was only moved is embedded again, and verify is ok. Two index runs
started at once on one data dir both complete."""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest
from conftest import ROOT, free_port, wait_for_health, wait_no_ray_processes, write_image

from msearch.files import walk
from msearch.library import Library
from msearch.settings import Settings

pytestmark = pytest.mark.slow  # Ray, servers or subprocesses: minutes

MSEARCH = str(ROOT / ".venv" / "bin" / "msearch")
MODELS = {"clip": "fake", "text": "fake", "clap": "none", "whisper": "none", "colpali": "none", "ocr": "none"}
WORDS = "harbour lighthouse budget rain valley camera river storm archive footage bridge garden".split()
REPORT = re.compile(r"^\[\d\d:\d\d:\d\d\] (initial|changes|reconcile): ")
LISTED = re.compile(r"^  (failed|skipped)\s+(/.*?): ")
UNITS = re.compile(r"; (\d+) units embedded")


def environment(data) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSEARCH_")}
    env.update({f"MSEARCH_MODELS__{role.upper()}": spec for role, spec in MODELS.items()})
    env.update(MSEARCH_DATA_DIR=str(data), MSEARCH_DASHBOARD="false", MSEARCH_RAY_NUM_CPUS="2")
    return env


def note(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def words(i: int) -> str:
    return " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(8)) + f" number {i}"


class Reports:
    """The run reports a watching process prints (``[12:00:01] changes: ...`` and the failed
    and skipped files listed under it), read from its output file as they come."""

    def __init__(self, path, process):
        self.path, self.process = path, process

    def read(self) -> list[dict]:
        reports = []
        for line in self.path.read_text(errors="replace").splitlines():
            if REPORT.match(line):
                units = UNITS.search(line)
                reports.append({"event": REPORT.match(line).group(1), "units": int(units.group(1)) if units else 0,
                                 "listed": set()})
            elif reports and LISTED.match(line):
                reports[-1]["listed"].add(LISTED.match(line).group(2))
        return reports

    def until_listed(self, path, timeout: float = 300) -> list[dict]:
        """Wait for the report that lists ``path`` (a file that fails: the last change made)."""
        deadline = time.monotonic() + timeout
        while True:
            reports = self.read()
            if any(str(path) in r["listed"] for r in reports):
                return reports
            assert self.process.poll() is None, self.path.read_text()[-3000:]
            assert time.monotonic() < deadline, reports
            time.sleep(0.5)


def sentinel(root, name: str):
    """A picture that cannot be decoded: it fails, and the report that lists it comes after
    every change made before it."""
    path = root / f"{name}.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + b"not a picture" * 10)
    return path


def first_burst(root) -> int:
    """Creates, saves, temporary files, deletes and renames; returns how many changes."""
    n = 0
    for b in range(3):  # 300 new notes in three bursts
        for i in range(100):
            note(root / f"new{b}" / f"n{i:03d}.txt", f"new note {b}-{i}: " + words(1000 + 100 * b + i))
            n += 1
        time.sleep(0.3)
    for k in range(4):  # 50 notes saved four times
        for i in range(25):
            for folder in ("f0", "f1"):
                note(root / folder / f"note{i:02d}.txt", f"{folder} note {i}, draft {k}: " + words(i + 50 * k))
                n += 1
        time.sleep(0.2)
    for i in range(100):  # temporary files: written and deleted at once
        note(root / "tmp" / f"t{i}.txt", f"scratch {i}")
        (root / "tmp" / f"t{i}.txt").unlink()
        n += 2
    for folder in ("f2", "f3"):  # 60 deletes
        for p in sorted((root / folder).iterdir()):
            p.unlink()
            n += 1
    for folder in ("f4", "f5", "f6"):  # 90 renames
        for p in sorted((root / folder).iterdir()):
            p.rename(p.with_name("renamed-" + p.name))
            n += 1
    return n


def second_burst(root, outside) -> int:
    """Only moves and renames, and one new file (where a folder was); returns how many changes."""
    n = 0
    for folder in ("new1", "new2"):  # 150 renames
        for p in sorted((root / folder).iterdir())[:75]:
            p.rename(p.with_name("moved-" + p.name))
            n += 1
    (root / "moved").mkdir()
    shutil.move(str(root / "f7"), str(root / "moved" / "f7"))  # folders moved around
    shutil.move(str(root / "new0"), str(root / "archive-new0"))
    (root / "f8").rename(root / "f8-renamed")
    shutil.move(str(root / "f1"), str(outside / "f1"))  # a folder moved out of the watched one
    for p in sorted((root / "f9").iterdir()):  # a folder replaced by a file of its name
        p.unlink()
        n += 1
    (root / "f9").rmdir()
    note(root / "f9", "a file where a folder was")
    return n + 6


def layout(tmp_path):
    root = tmp_path / "watched"
    for f in range(10):
        for i in range(30):
            note(root / f"f{f}" / f"note{i:02d}.txt", f"folder {f} note {i}: " + words(f * 30 + i))
    for i in range(10):
        write_image(root / "pictures" / f"pic{i}.png", seed=i)
    outside = tmp_path / "outside"
    outside.mkdir()
    return root, outside


def check(data, root, reports_a: list[dict], reports_b: list[dict], failing: set[str]) -> None:
    # Phase one: the 300 new notes and the last saves were embedded (at least).
    assert sum(r["units"] for r in reports_a if r["event"] == "changes") >= 300
    # Phase two moved and renamed 300 files and one folder out: the only new content is f9.
    assert sum(r["units"] for r in reports_b) == 1, reports_b
    lib = Library(Settings(data_dir=data, models=MODELS))
    try:
        disk = {e["path"] for e in walk([root])}
        assert len(disk) == 491 + len(failing)
        assert set(lib.catalog.paths_under([str(root)])) == disk
        rows = lib.catalog.files_by_path(sorted(disk))
        assert {p for p, r in rows.items() if r["status"] != "indexed"} == failing
        assert lib.verify()["ok"]
        assert "draft 3" in lib.show(str(root / "f0" / "note07.txt"))["units"][0]["text"]
        assert lib.show(str(root / "f9"))["status"] == "indexed"
    finally:
        lib.close()


@pytest.mark.parametrize("mode", ["watch", "serve"])
def test_a_thousand_changes_leave_the_catalog_equal_to_the_disk(tmp_path, mode):
    root, outside = layout(tmp_path)
    data = tmp_path / "data"
    env = environment(data)
    log = tmp_path / "out.log"
    if mode == "watch":
        cmd = [MSEARCH, "watch", str(root), "--debounce", "1"]
    else:
        port = free_port()
        env.update(MSEARCH_ROOTS=str(root), MSEARCH_PORT=str(port))
        cmd = [MSEARCH, "serve"]
    process = subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    reports = Reports(log, process)
    try:
        if mode == "serve":
            wait_for_health(f"http://127.0.0.1:{port}", process)
        done = time.monotonic() + 300
        while not any(r["event"] == "initial" for r in reports.read()):
            assert process.poll() is None and time.monotonic() < done, log.read_text()[-3000:]
            time.sleep(0.5)
        changes = first_burst(root)
        time.sleep(1.5)
        one = sentinel(root, "zz-one")
        reports_a = reports.until_listed(one)
        changes += second_burst(root, outside)
        time.sleep(1.5)
        two = sentinel(root, "zz-two")
        reports_b = reports.until_listed(two)[len(reports_a):]
        assert changes >= 1000
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=180)
    assert not wait_no_ray_processes(60)
    check(data, root, reports_a, reports_b, {str(one), str(two)})


def test_two_index_runs_started_at_once_both_complete(tmp_path):
    # The short run starts Ray (and ends first), the long one joins it: the cluster must stay
    # until the long one is done.
    for folder, n in (("a", 20), ("b", 1500)):
        for i in range(n):
            note(tmp_path / folder / f"note{i:04d}.txt", f"{folder} {i}: " + words(i))
        note(tmp_path / folder / "same.txt", "the same bytes in both folders")
    data = tmp_path / "data"
    env = environment(data)
    runs = []
    for folder in ("a", "b"):
        runs.append(subprocess.Popen([MSEARCH, "index", str(tmp_path / folder)], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True))
        time.sleep(0.5)
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n".join(outputs)
    assert not wait_no_ray_processes(60)
    lib = Library(Settings(data_dir=data, models=MODELS))
    try:
        disk = {e["path"] for e in walk([tmp_path / "a", tmp_path / "b"])}
        rows = lib.catalog.files_by_path(sorted(disk))
        assert set(rows) == disk and {r["status"] for r in rows.values()} == {"indexed"}
        assert lib.verify()["ok"]
    finally:
        lib.close()
