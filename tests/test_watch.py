"""``msearch watch``: bursts of creates, edits, renames and deletes; the index equals the disk after."""

import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
from conftest import ROOT, wait_no_ray_processes, write_image

from msearch.files import walk
from msearch.library import Library
from msearch.settings import Settings

MSEARCH = str(ROOT / ".venv" / "bin" / "msearch")


@pytest.mark.parametrize("mode", [[], ["--poll", "0.5"]], ids=["events", "polling"])
def test_watch_keeps_the_index_equal_to_the_folder(tmp_path, mode):
    root = tmp_path / "watched"
    root.mkdir()
    for i in range(5):
        (root / f"note{i}.txt").write_text(f"note {i} about the harbour\n")
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSEARCH_")}
    env.update(MSEARCH_DATA_DIR=str(data), MSEARCH_MODELS__CLIP="fake", MSEARCH_MODELS__TEXT="fake",
               MSEARCH_MODELS__CLAP="none", MSEARCH_MODELS__WHISPER="none", MSEARCH_MODELS__COLPALI="none",
               MSEARCH_MODELS__OCR="none", MSEARCH_DASHBOARD="false", MSEARCH_RAY_NUM_CPUS="2")
    watch = subprocess.Popen([MSEARCH, "watch", str(root), "--debounce", "1", "--json", *mode], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    events: list[dict] = []
    reader = threading.Thread(target=lambda: events.extend(json.loads(line) for line in watch.stdout), daemon=True)
    reader.start()

    def settle(n_events: int, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while len(events) < n_events:
            assert watch.poll() is None, "msearch watch exited"
            assert time.monotonic() < deadline, events
            time.sleep(0.2)

    try:
        settle(1)
        assert events[0]["event"] == "initial" and events[0]["indexed"] == 5
        # A burst: new files, a file saved five times, a rename, a delete, a folder moved in.
        for i in range(10):
            write_image(root / "new" / f"pic{i}.png", seed=i)
        for k in range(5):
            (root / "note0.txt").write_text(f"note 0, draft {k}, about the lighthouse\n")
        (root / "note1.txt").rename(root / "note-one.txt")
        (root / "note2.txt").unlink()
        outside = tmp_path / "incoming"
        outside.mkdir()
        (outside / "letter.txt").write_text("a letter about tides\n")
        shutil.move(str(outside), str(root / "incoming"))
        settle(2)
        time.sleep(3)  # let any straggling batch go through
        n = len(events)
        # A second burst: the moved-in folder is renamed; a picture is deleted.
        (root / "incoming").rename(root / "letters")
        (root / "new" / "pic0.png").unlink()
        settle(n + 1)
        time.sleep(3)
    finally:
        watch.send_signal(signal.SIGINT)
        watch.wait(timeout=120)
    assert watch.returncode == 0
    assert not wait_no_ray_processes(60)

    changes = [e for e in events if e["event"] == "changes"]
    # Embedded: ten pictures, the edited note, the letter. Renamed files and folders: nothing.
    assert sum(e["units"] for e in changes) == 10 + 1 + 1, changes
    assert sum(len(e["removed"]) for e in changes) == 2 + 2  # note2 and note1's old path; then pic0, the letter's
    settings = Settings(data_dir=data, models={"clip": "fake", "text": "fake", "clap": "none", "whisper": "none",
                                               "colpali": "none", "ocr": "none"})
    lib = Library(settings)
    try:
        disk = {e["path"] for e in walk([root])}
        assert set(lib.catalog.paths_under([str(root)])) == disk
        assert {r["status"] for r in lib.catalog.files_by_path(sorted(disk)).values()} == {"indexed"}
        assert lib.verify()["ok"]
        note0 = lib.show(str(root / "note0.txt"))
        assert "draft 4" in note0["units"][0]["text"]  # the last save
    finally:
        lib.close()
