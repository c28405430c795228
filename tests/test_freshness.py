"""Freshness and exactness without Ray: deletions, moves and edits reconciled, verify, the
debouncer, and a run that died half-way."""

from __future__ import annotations

import shutil
import uuid

from conftest import index_direct

from msearch.embed.fake import FakeEmbedder
from msearch.files import walk
from msearch.library import Library
from msearch.watch import Changes

EMBEDDERS = {"clip": FakeEmbedder("clip"), "text": FakeEmbedder("text")}


def point_ids(lib: Library) -> set[str]:
    return {h.id for space in lib.vectors.spaces() for h in lib.vectors.scroll(space)}


def reindex(lib, settings, root):
    return index_direct(lib, settings, [root], EMBEDDERS)


def test_deletions_moves_and_edits_are_reconciled(fake_settings, corpus, tmp_path):
    lib = Library(fake_settings)
    try:
        reindex(lib, fake_settings, corpus)
        before = point_ids(lib)
        assert lib.verify()["ok"]
        gardening = lib.show(str(corpus / "docs" / "gardening.txt"))

        (corpus / "docs" / "gardening.txt").rename(corpus / "docs" / "garden-notes.txt")  # a move
        (corpus / "photos" / "img0.jpg").unlink()  # a deletion
        (corpus / "docs" / "budget.md").write_text("A new budget: travel is back, marketing is cut.\n")  # an edit
        shutil.move(str(corpus / "photos"), str(corpus / "pictures"))  # a folder moved
        report = reindex(lib, fake_settings, corpus)

        assert sorted(p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1] for p in report["removed"]) == [
            "docs/gardening.txt", "photos/graphic.png", "photos/img0.jpg",
            "photos/img1.jpg", "photos/img2.jpg", "photos/img3.jpg", "photos/misnamed.txt"]
        moved = lib.show(str(corpus / "docs" / "garden-notes.txt"))
        assert moved["status"] == "indexed" and moved["content_hash"] == gardening["content_hash"]
        after = point_ids(lib)
        # Moves re-embed nothing: the moved files' points are the same points.
        for unit in gardening["units"]:
            assert any(unit["text"] == u["text"] for u in moved["units"])
        gone_img = {h.id for h in lib.vectors.scroll("clip")}
        assert len(gone_img) == 5  # img0's content is gone; the other five pictures moved with their points
        assert before - after and after - before  # the deleted picture and the old budget left; the new came
        status = lib.status()
        assert status["files"]["indexed"] == 9 - 1  # one picture fewer
        assert lib.verify()["ok"], lib.verify()
        disk = {e["path"] for e in walk([corpus], exclude=[fake_settings.data_dir])}
        assert set(lib.catalog.paths_under([str(corpus)])) == disk
    finally:
        lib.close()


def test_verify_finds_missing_and_orphan_points(fake_settings, corpus):
    from msearch.store.vectors import PointData

    lib = Library(fake_settings)
    try:
        reindex(lib, fake_settings, corpus)
        budget = lib.show(str(corpus / "docs" / "budget.md"))
        lib.vectors.delete_contents([budget["content_hash"]])
        orphan = PointData(str(uuid.uuid4()), {"content_hash": "f" * 32, "kind": "text", "unit": 0}, [0.1] * 48)
        lib.vectors.upsert("text", [orphan])
        report = lib.verify()
        assert not report["ok"]
        problems = {p["content_hash"]: p["problem"] for p in report["problems"]}
        assert "0 text points for 1 units" in problems[budget["content_hash"]]
        assert "points of a content no file holds" in problems["f" * 32]
    finally:
        lib.close()


def test_a_run_that_died_is_taken_over_by_the_next(fake_settings, corpus):
    from msearch.files import hash_and_sniff
    from msearch.units import decode_file, embed_units

    lib = Library(fake_settings)
    alive = {"job-1": True, "job-2": True}
    lib.job_alive = lambda job: alive[job]
    try:
        models = {"clip": "fake-clip", "text": "fake-text"}
        lib.begin_run("run-1", models, "job-1")
        entries = list(walk([corpus]))
        rows = [{**hash_and_sniff(e["path"], fake_settings.text.suffixes), "run_id": "run-1"} for e in entries]
        emit = lib.claim("run-1", rows, models, {})
        units = [u for r in emit[:3] for chunk in decode_file(r, fake_settings, models) for u in chunk]
        lib.write(embed_units(units[:2], EMBEDDERS))  # then the driver is killed
        alive["job-1"] = False
        report = index_direct(lib, fake_settings, [corpus], EMBEDDERS)
        # What the dead run finished stays; what it left half-done is indexed again.
        assert len(report["indexed"]) + len(report["unchanged"]) == 9 and report["unchanged"], report
        assert lib.verify()["ok"]
        assert {r["status"] for r in lib.catalog.counts()} == {"indexed", "failed", "skipped"}
    finally:
        lib.close()


def test_changes_are_debounced_and_deduplicated(tmp_path):
    changes = Changes(quiet_s=1.0, max_wait_s=5.0, ignore=[tmp_path / "data"])
    keep, tmp, moved = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"
    keep.write_text("x")
    moved.write_text("y")
    for _ in range(5):
        changes.changed(str(keep))  # an editor saving several times
    changes.changed(str(tmp))  # created and deleted again within the burst
    changes.gone(str(tmp))
    changes.moved(str(tmp_path / "old.txt"), str(moved))
    changes.changed(str(tmp_path / ".a.txt.swp"))
    changes.changed(str(tmp_path / "data" / "catalog.duckdb"))
    assert not changes.take()  # still busy
    import time

    batch = changes.take(now=time.monotonic() + 1.5)
    assert batch.changed == [str(keep), str(moved)]
    assert batch.gone == [str(tmp), str(tmp_path / "old.txt")]
    assert not changes.take(now=time.monotonic() + 3)


def test_out_of_memory_halves_the_batch_and_retries():
    from msearch.units import embed_units

    calls = []

    class Tight(FakeEmbedder):
        def embed_texts(self, texts):
            calls.append(len(texts))
            if len(texts) > 3:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().embed_texts(texts)

    rows = [{"space": "text", "text": f"chunk {i}", "content_hash": "h", "unit": i} for i in range(10)]
    out = embed_units(rows, {"text": Tight("text")})
    assert all(r.get("vector") and not r.get("error") for r in out)
    assert calls[0] == 10 and max(calls[1:]) <= 5 and sum(c for c in calls if c <= 3) == 10
    # The vectors are what one batch would have given.
    want = FakeEmbedder("text").embed_texts([r["text"] for r in rows])
    assert [r["vector"] for r in out] == [list(map(float, v)) for v in want]


def test_failed_files_are_retried_with_backoff(fake_settings, corpus):
    import os

    lib = Library(fake_settings)
    try:
        first = reindex(lib, fake_settings, corpus)
        assert [f["path"].rsplit("/", 1)[-1] for f in first["failed"]] == ["broken.jpg"]
        broken = str(corpus / "broken.jpg")
        assert lib.catalog.file(broken)["attempts"] == 1
        again = reindex(lib, fake_settings, corpus)  # at once: not tried again
        (entry,) = again["failed"]
        assert "next try in" in entry["error"] and lib.catalog.file(broken)["attempts"] == 1
        # After the backoff has passed it is tried again, and the next wait doubles.
        lib.catalog._exec("UPDATE files SET updated_at = updated_at - 61 WHERE path = ?", [broken])
        reindex(lib, fake_settings, corpus)
        assert lib.catalog.file(broken)["attempts"] == 2
        assert lib.claims.backoff(lib.catalog.file(broken)) == 120
        # A file that changes is tried at once.
        os.utime(broken, (1, 1))
        reindex(lib, fake_settings, corpus)
        assert lib.catalog.file(broken)["attempts"] == 3
        (corpus / "broken.jpg").write_bytes((corpus / "photos" / "img1.jpg").read_bytes())  # fixed
        reindex(lib, fake_settings, corpus)
        fixed = lib.catalog.file(broken)
        assert fixed["status"] == "indexed" and fixed["attempts"] == 0
    finally:
        lib.close()
