"""A folder of hostile names and files: each is recorded with a clear reason or indexed fine;
nothing else is affected."""

import os
from pathlib import Path

from conftest import index_direct, write_image

from msearch.embed.fake import FakeEmbedder
from msearch.library import Library


def test_hostile_names_and_files(fake_settings, tmp_path):
    root = tmp_path / "hostile"
    root.mkdir()
    (root / "名字 with spaces.txt").write_text("a note with a Chinese and spaced name\n")
    (root / ("long" * 60 + ".txt")).write_text("a note with a 244-character name\n")
    (root / os.fsdecode(b"bad-\xff\xfe-name.txt")).write_text("the name is not UTF-8\n")
    (root / "dangling.txt").symlink_to(root / "nowhere.txt")
    (root / "loop").mkdir()
    (root / "loop" / "up").symlink_to(root)  # a symlink loop: not followed
    (root / "folder.jpg").mkdir()  # a folder named like a picture
    (root / "folder.jpg" / "inside.txt").write_text("a note inside a folder named folder.jpg\n")
    (root / "zero.png").write_bytes(b"")
    write_image(root / "picture.txt", seed=1, fmt="PNG")  # the wrong suffix: content wins
    (root / "truncated.jpg").write_bytes(write_image(tmp_path / "whole.jpg", seed=2).read_bytes()[:300])
    # A decompression bomb: a PNG header that claims 40000 x 40000 pixels.
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    (root / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0))
                                    + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    embedders = {"clip": FakeEmbedder("clip"), "text": FakeEmbedder("text")}
    lib = Library(fake_settings)
    try:
        report = index_direct(lib, fake_settings, [root], embedders)
        indexed = sorted(Path(i["path"]).name for i in report["indexed"])
        failed = {Path(f["path"]).name: f["error"] for f in report["failed"]}
        skipped = {Path(f["path"]).name: f["error"] for f in report["skipped"]}
        assert indexed == sorted(["名字 with spaces.txt", "long" * 60 + ".txt", "inside.txt", "picture.txt"])
        assert "not valid UTF-8" in failed["bad-\\xff\\xfe-name.txt"]
        assert "cannot decode image" in failed["truncated.jpg"]
        assert "decompression bomb" in failed["bomb.png"] and "MSEARCH_IMAGE__MAX_PIXELS" in failed["bomb.png"]
        assert skipped == {"zero.png": "empty file"}
        assert lib.show(str(root / "picture.txt"))["kind"] == "image"
        assert lib.verify()["ok"]
        # Listed by status with their reasons, and the rest searchable.
        status = lib.status()
        assert {f["path"].rsplit("/", 1)[-1] for f in status["failed"]} == set(failed)
        from msearch.search import SearchService

        top = SearchService(embedders, lib, fake_settings).search_text("Chinese spaced name", kinds=["text"])[0]
        assert top["path"].endswith("名字 with spaces.txt")
    finally:
        lib.close()


# Indexes ROOT into DATA with the fake models, as `msearch index` does, and prints what the
# catalog then says. Run in a process that file permissions apply to (see below).
_INDEX_AND_REPORT = """
import json, sys
from pathlib import Path
sys.path[:0] = [{repo!r}, {tests!r}]
from conftest import index_direct, make_settings
from msearch.embed.fake import FakeEmbedder
from msearch.library import Library

settings = make_settings(Path({data!r}), models={{"clip": "fake", "text": "fake"}},
                         index={{"retry_backoff_s": 0}})
lib = Library(settings)
try:
    report = index_direct(lib, settings, [{root!r}], {{r: FakeEmbedder(r) for r in ("clip", "text")}})
    rows = lib.catalog.files_by_path(lib.catalog.paths_under([{root!r}]))
    print(json.dumps({{"files": {{p: [f["status"], f["error"]] for p, f in rows.items()}},
                      "verify": lib.verify()["ok"], "removed": report["removed"],
                      "failed": [f["path"] for f in lib.status()["failed"]]}}))
finally:
    lib.close()
"""


def test_unreadable_files_and_folders_are_recorded_and_keep_what_was_indexed(tmp_path):
    import json
    import shutil
    import subprocess
    import sys

    import pytest

    repo = Path(__file__).resolve().parents[1]
    root, data = tmp_path / "root", tmp_path / "data"
    (root / "locked").mkdir(parents=True)
    (root / "open.txt").write_text("a note anyone may read about tides\n")
    (root / "secret.txt").write_text("a note that becomes private about harbours\n")
    (root / "locked" / "inside.txt").write_text("a note in a folder that becomes private about ferries\n")
    prefix = []
    if os.geteuid() == 0:  # root reads whatever the mode says: drop the two capabilities that allow it
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv (util-linux): permissions cannot be tested")
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", "--bounding-set", caps, "--inh-caps", caps]

    def run() -> dict:
        script = _INDEX_AND_REPORT.format(repo=str(repo), tests=str(repo / "tests"), data=str(data), root=str(root))
        out = subprocess.run(prefix + [sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-4000:]
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["files"] = {Path(p).name: tuple(v) for p, v in result["files"].items()}
        return result

    first = run()
    assert first["files"] == {"open.txt": ("indexed", None), "secret.txt": ("indexed", None),
                              "inside.txt": ("indexed", None)}
    # An edited file and a new one that cannot be read (a mode change alone leaves a file
    # unchanged: it is not read again), and a folder that cannot be listed.
    with open(root / "secret.txt", "a") as f:
        f.write("and now about lighthouses\n")
    (root / "new.txt").write_text("a new note nobody may read\n")
    for name in ("secret.txt", "new.txt", "locked"):
        os.chmod(root / name, 0)
    try:
        second = run()
    finally:
        os.chmod(root / "locked", 0o755)
    files = second["files"]
    assert files["open.txt"] == ("indexed", None)
    for name in ("secret.txt", "new.txt"):
        assert files[name][0] == "failed" and "cannot read: Permission denied" in files[name][1], files
    assert files["locked"][0] == "failed" and "cannot list this folder (Permission denied)" in files["locked"][1]
    assert files["inside.txt"] == ("indexed", None) and second["removed"] == []  # nothing indexed is lost
    assert {Path(p).name for p in second["failed"]} == {"secret.txt", "new.txt", "locked"} and second["verify"]
    # Readable again: indexed again (no backoff in this test) and the folder's record goes.
    os.chmod(root / "secret.txt", 0o644)
    os.chmod(root / "new.txt", 0o644)
    third = run()
    assert third["files"] == {**first["files"], "new.txt": ("indexed", None)}
    assert third["failed"] == [] and third["verify"]
    assert [Path(p).name for p in third["removed"]] == ["locked"]


def test_a_file_written_while_it_is_read_is_retried_and_one_that_vanishes_is_recorded(fake_settings, tmp_path):
    import threading
    import time

    from msearch.files import hash_entry, walk

    root = tmp_path / "busy"
    root.mkdir()
    (root / "calm.txt").write_text("a note nobody touches about orchards\n")
    growing = write_image(root / "growing.png", seed=3)
    with open(growing, "ab") as f:
        f.write(b"\0" * (16 << 20))  # bytes after PNG's end: the picture still opens
    stop = threading.Event()
    appended = []

    def writer():  # another program still writing the file while msearch reads it
        with open(growing, "ab") as f:
            while not stop.is_set():
                f.write(b"\0" * 4096)
                f.flush()
                appended.append(1)
                time.sleep(0.001)

    embedders = {"clip": FakeEmbedder("clip"), "text": FakeEmbedder("text")}
    lib = Library(fake_settings)
    try:
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            while not appended:
                pass
            report = index_direct(lib, fake_settings, [root], embedders)
        finally:
            stop.set()
            thread.join()
        assert [Path(i["path"]).name for i in report["indexed"]] == ["calm.txt"]
        (failed,) = report["failed"]
        assert failed["path"] == str(growing) and "changed while it was read" in failed["error"]
        assert lib.status()["failed"][0]["path"] == str(growing)
        # Once the writer is done, the next run (at once: the file changed) indexes it.
        report = index_direct(lib, fake_settings, [root], embedders)
        assert [Path(i["path"]).name for i in report["indexed"]] == ["growing.png"] and not report.get("failed")
        assert lib.show(str(growing))["kind"] == "image" and lib.verify()["ok"]

        # A file listed, then gone before it is read: recorded with the reason, the rest unaffected,
        # and forgotten by the next run.
        import uuid

        doomed = root / "doomed.txt"
        doomed.write_text("a note deleted mid-run\n")
        run_id = uuid.uuid4().hex
        models = {r: e.model_id for r, e in embedders.items()}
        lib.begin_run(run_id, models)
        todo = lib.plan(run_id, list(walk([root])), models)
        assert [Path(e["path"]).name for e in todo] == ["doomed.txt"]
        doomed.unlink()
        emit = lib.claim(run_id, [{**hash_entry(e, fake_settings.text.suffixes), "run_id": run_id} for e in todo],
                         models, {})
        assert emit == []
        report = lib.finish_run(run_id)
        assert "No such file" in report["failed"][0]["error"] and lib.verify()["ok"]
        report = index_direct(lib, fake_settings, [root], embedders)
        assert report["removed"] == [str(doomed)] and not report.get("indexed")
        assert {Path(p).name for p in lib.catalog.paths_under([str(root)])} == {"calm.txt", "growing.png"}
        assert lib.status()["failed"] == [] and lib.verify()["ok"]
    finally:
        lib.close()
