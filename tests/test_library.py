"""The owner's bookkeeping: statuses, idempotent points, replacement, sharing, failures."""

import os
import time

import pytest

from conftest import index_direct, write_image
from msearch.embed.fake import FakeEmbedder
from msearch.errors import ConfigError, NotFound
from msearch.library import Library
from msearch.search import SearchService


@pytest.fixture
def lib(fake_settings):
    library = Library(fake_settings)
    yield library
    library.close()


@pytest.fixture
def embedders():
    return {"clip": FakeEmbedder("clip"), "text": FakeEmbedder("text")}


def _paths(report, outcome):
    return sorted(os.path.basename(i["path"]) for i in report.get(outcome, []))


def _all_points(lib):
    return {space: sorted(h.id for h in lib.vectors.scroll(space)) for space in lib.spaces()}


def test_statuses_and_reasons(lib, fake_settings, corpus, embedders):
    report = index_direct(lib, fake_settings, [corpus], embedders)
    assert _paths(report, "indexed") == sorted(
        ["img0.jpg", "img1.jpg", "img2.jpg", "img3.jpg", "graphic.png", "misnamed.txt",
         "budget.md", "gardening.txt", "rain.txt"])
    failed = {os.path.basename(i["path"]): i["error"] for i in report["failed"]}
    assert list(failed) == ["broken.jpg"] and "cannot decode image" in failed["broken.jpg"]
    skipped = {os.path.basename(i["path"]): i["error"] for i in report["skipped"]}
    assert skipped == {"empty.txt": "empty file", "noise.bin": "unrecognised content (unrecognised binary)"}

    status = lib.status()
    assert status["kinds"]["image"] == {"indexed": 6, "failed": 1}
    assert status["kinds"]["text"] == {"indexed": 3}
    assert status["points"] == {"clip": 6, "text": 3}
    assert [f["path"] for f in status["failed"]] == [str(corpus / "broken.jpg")]

    shown = lib.show(str(corpus / "docs" / "rain.txt"))
    assert shown["status"] == "indexed" and shown["kind"] == "text"
    assert shown["units"][0]["text"].startswith("红色汽车")
    assert lib.show(shown["file_id"])["path"] == shown["path"]
    assert lib.show(str(corpus / "photos" / "misnamed.txt"))["kind"] == "image"
    with pytest.raises(NotFound):
        lib.show("/no/such/file")


def test_reindexing_unchanged_content_changes_nothing(lib, fake_settings, corpus, embedders):
    index_direct(lib, fake_settings, [corpus], embedders)
    before = _all_points(lib)
    # Touch a file (new mtime, same bytes): hashed again, but not re-embedded.
    doc = corpus / "docs" / "budget.md"
    os.utime(doc, (time.time() + 5, time.time() + 5))
    report = index_direct(lib, fake_settings, [corpus], embedders)
    assert report.get("indexed", []) == []
    assert "budget.md" in _paths(report, "unchanged")
    assert len(report["unchanged"]) == 9
    assert _all_points(lib) == before


def test_changed_file_replaces_its_points(lib, fake_settings, corpus, embedders):
    index_direct(lib, fake_settings, [corpus], embedders)
    doc = corpus / "docs" / "gardening.txt"
    old = lib.show(str(doc))
    old_ids = {h.id for h in lib.vectors.scroll("text") if h.payload["content_hash"] == old["content_hash"]}
    doc.write_text("Roses are pruned in early spring, just as the buds swell.\n" * 30)
    report = index_direct(lib, fake_settings, [corpus], embedders)
    assert _paths(report, "indexed") == ["gardening.txt"]
    new = lib.show(str(doc))
    assert new["content_hash"] != old["content_hash"] and len(new["units"]) > 1
    ids = {h.id for h in lib.vectors.scroll("text")}
    assert not (old_ids & ids), "old points are gone"
    assert lib.status()["points"]["text"] == 2 + len(new["units"])


def test_same_content_at_two_paths_is_embedded_once(lib, fake_settings, tmp_path, embedders):
    a = write_image(tmp_path / "in" / "a.png", seed=3)
    (tmp_path / "in" / "copy.png").write_bytes(a.read_bytes())
    report = index_direct(lib, fake_settings, [tmp_path / "in"], embedders)
    assert _paths(report, "indexed") == ["a.png", "copy.png"]
    assert lib.status()["points"]["clip"] == 1
    results = SearchService(embedders, lib, fake_settings).search_image(a.read_bytes())
    assert sorted(os.path.basename(r["path"]) for r in results) == ["a.png", "copy.png"]
    # Deleting one copy's row must not take the shared points with it.
    (tmp_path / "in" / "copy.png").write_bytes(b"changed")
    index_direct(lib, fake_settings, [tmp_path / "in"], embedders)
    assert lib.status()["points"]["clip"] == 1


def test_missing_model_skips_only_its_kind(lib, fake_settings, corpus):
    text_only = {"text": FakeEmbedder("text")}
    report = index_direct(lib, fake_settings, [corpus], text_only, missing={"clip": "clip model is unavailable"})
    assert _paths(report, "indexed") == ["budget.md", "gardening.txt", "rain.txt"]
    skipped = {os.path.basename(i["path"]): i["error"] for i in report["skipped"]}
    assert skipped["img0.jpg"] == "clip model is unavailable"
    # Once the model is there, the skipped images are indexed and the text is unchanged.
    both = {"clip": FakeEmbedder("clip"), "text": FakeEmbedder("text")}
    report = index_direct(lib, fake_settings, [corpus], both)
    assert len(report["indexed"]) == 6 and len(report["unchanged"]) == 3


def test_a_different_model_is_refused(lib, fake_settings, corpus, embedders):
    index_direct(lib, fake_settings, [corpus], embedders)
    other = FakeEmbedder("text")
    other.model_id = "another-text-model"
    with pytest.raises(ConfigError, match="cannot be compared"):
        lib.begin_run("r", {"text": other.model_id})


def test_thumbnails_are_served_by_opaque_id(lib, fake_settings, corpus, embedders):
    index_direct(lib, fake_settings, [corpus], embedders)
    unit = lib.show(str(corpus / "photos" / "img1.jpg"))["units"][0]
    thumb_id = unit["thumbnail"].rsplit("/", 1)[1]
    assert lib.thumbnail(thumb_id)[:3] == b"\xff\xd8\xff"
    for bad in ("../../etc/passwd", "0" * 32, str(corpus / "photos" / "img1.jpg")):
        with pytest.raises(NotFound):
            lib.thumbnail(bad)
    write_image(corpus / "photos" / "img1.jpg", seed=77)  # the picture changes: its old thumbnail goes
    index_direct(lib, fake_settings, [corpus], embedders)
    new_id = lib.show(str(corpus / "photos" / "img1.jpg"))["units"][0]["thumbnail"].rsplit("/", 1)[1]
    assert new_id != thumb_id and lib.thumbnail(new_id)[:3] == b"\xff\xd8\xff"
    with pytest.raises(NotFound):
        lib.thumbnail(thumb_id)
    legacy = fake_settings.thumbs_path / "ab" / ("ab" + "1" * 30 + ".jpg")  # a data dir from before
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"\xff\xd8\xffold")
    assert lib.thumbnail(legacy.stem) == b"\xff\xd8\xffold"


def test_store_survives_reopen(fake_settings, corpus, embedders):
    lib = Library(fake_settings)
    index_direct(lib, fake_settings, [corpus], embedders)
    before = _all_points(lib)
    lib.close()
    lib = Library(fake_settings)
    try:
        assert _all_points(lib) == before
        assert lib.status()["files"]["indexed"] == 9
    finally:
        lib.close()


def test_a_file_that_becomes_unreadable_fails_without_losing_its_vectors(lib, fake_settings, corpus, embedders):
    index_direct(lib, fake_settings, [corpus], embedders)
    doc = str(corpus / "docs" / "gardening.txt")
    before = _all_points(lib)
    models = {role: e.model_id for role, e in embedders.items()}
    lib.begin_run("r", models)
    # What the hash stage reports for a file it cannot open (tests run as root, who opens anything).
    assert lib.claim("r", [{"path": doc, "size": 1, "mtime": 1.0, "error": "cannot read: Permission denied"}],
                     models, {}) == []
    report = lib.finish_run("r")
    assert report["failed"] == [{"path": doc, "error": "cannot read: Permission denied"}]
    assert lib.show(doc)["status"] == "failed" and lib.show(doc)["kind"] == "text"
    assert _all_points(lib) == before
    report = index_direct(lib, fake_settings, [corpus], embedders)  # readable again
    assert "gardening.txt" in _paths(report, "indexed")
    assert _all_points(lib) == before


def test_bookkeeping_gives_way_to_a_running_search(lib, fake_settings, corpus, embedders):
    import threading

    index_direct(lib, fake_settings, [corpus], embedders)
    search = lib.vectors.search

    def slow_search(queries):  # a search that takes 0.4 s in the store
        time.sleep(0.4)
        return search(queries)

    lib.vectors.search = slow_search
    service = SearchService(embedders, lib, fake_settings)
    searching = threading.Thread(target=service.search_text, args=("budget",))
    searching.start()
    time.sleep(0.1)
    start = time.perf_counter()
    lib.give_way()  # a step of a write or claim waits for the search to end
    waited = time.perf_counter() - start
    searching.join()
    assert 0.2 < waited < 0.45
    lib.vectors.search = lambda queries: (time.sleep(2.0), search(queries))[1]
    searching = threading.Thread(target=service.search_text, args=("budget",))
    searching.start()
    time.sleep(0.1)
    start = time.perf_counter()
    lib.give_way(most_s=0.3)  # but not for ever: a stream of searches cannot stop a run
    assert 0.25 < time.perf_counter() - start < 1.0
    searching.join()


def test_a_search_finds_its_files_while_a_write_holds_the_catalog(lib, fake_settings, corpus, embedders):
    import threading

    index_direct(lib, fake_settings, [corpus], embedders)
    service = SearchService(embedders, lib, fake_settings)
    want = [r["path"] for r in service.search_text("budget")]
    assert want
    holding, release = threading.Event(), threading.Event()

    def write():  # a long catalog statement of a run, in the owner's writing thread
        with lib.catalog._lock:
            holding.set()
            release.wait(10)

    writer = threading.Thread(target=write)
    writer.start()
    holding.wait(5)
    try:
        start = time.perf_counter()
        got = [r["path"] for r in service.search_text("budget")]
        took = time.perf_counter() - start
    finally:
        release.set()
        writer.join()
    assert got == want and took < 2.0


def test_points_go_to_the_vector_store_in_parts_with_searches_let_in_between(lib, fake_settings, tmp_path,
                                                                            embedders):
    from msearch.library.writer import UPSERT_POINTS

    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(UPSERT_POINTS + 40):
        write_image(folder / f"p{i:03d}.png", seed=i)
    calls = []
    upsert, give_way = lib.vectors.upsert, lib.writer.give_way
    lib.vectors.upsert = lambda space, points: (calls.append(("upsert", space, len(points))), upsert(space, points))
    lib.writer.give_way = lambda: (calls.append(("give_way",)), give_way())
    report = index_direct(lib, fake_settings, [folder], embedders)
    assert len(report["indexed"]) == UPSERT_POINTS + 40
    upserts = [c for c in calls if c[0] == "upsert"]
    assert sum(c[2] for c in upserts) == UPSERT_POINTS + 40 and max(c[2] for c in upserts) <= UPSERT_POINTS
    assert all(calls[i - 1] == ("give_way",) for i, c in enumerate(calls) if c[0] == "upsert")


def test_a_file_is_indexed_once_its_points_are_flushed(lib, fake_settings, tmp_path, embedders, monkeypatch):
    from msearch.files import hash_entry, walk
    from msearch.units import decode_file, embed_units

    monkeypatch.setattr("msearch.library.writer.COMMIT_EVERY_S", 600.0)  # no flush before the run ends

    note = tmp_path / "in" / "note.txt"
    note.parent.mkdir()
    note.write_text("The harbour ferry leaves at noon.\n")
    models = {"text": "fake-text"}
    lib.begin_run("r1", models)
    rows = [{**hash_entry(e, fake_settings.text.suffixes), "run_id": "r1"} for e in walk([note.parent])]
    (claimed,) = lib.claim("r1", rows, models, {})
    flushes = []
    flush = lib.vectors.flush
    lib.vectors.flush = lambda: (flushes.append(time.monotonic()), flush())
    units = [u for chunk in decode_file(claimed, fake_settings, models) for u in chunk]
    lib.write(embed_units(units, {"text": embedders["text"]}))  # all its units
    assert lib.show(str(note))["status"] == "pending" and not flushes
    report = lib.finish_run("r1")
    assert flushes and lib.show(str(note))["status"] == "indexed"
    assert [os.path.basename(i["path"]) for i in report["indexed"]] == ["note.txt"]


def test_a_retried_claim_decodes_again_what_is_unsettled_and_records_nothing_twice(lib, fake_settings, tmp_path,
                                                                                  embedders):
    """Ray retries a hash task whose worker died after its claim: the same rows are claimed again
    by the same run. A content not yet settled is handed out again (the first try's decode died
    with the worker); a settled one is not; no file is reported twice."""
    from msearch.files import hash_entry, walk
    from msearch.units import decode_file, embed_units

    folder = tmp_path / "notes"
    folder.mkdir()
    for i in range(3):
        (folder / f"note{i}.txt").write_text(f"Note {i}: the harbour ferry leaves at noon.\n")
    (folder / "copy.txt").write_text("Note 0: the harbour ferry leaves at noon.\n")  # note0's content
    (folder / "empty.txt").write_text("")
    models = {"text": "fake-text"}
    lib.begin_run("r1", models)
    rows = [{**hash_entry(e, fake_settings.text.suffixes), "run_id": "r1"} for e in walk([folder])]
    first = lib.claim("r1", rows, models, {})
    assert len({r["content_hash"] for r in first}) == len(first) == 3

    def embedded(claimed):
        return embed_units([u for c in claimed for chunk in decode_file(c, fake_settings, models) for u in chunk],
                           {"text": embedders["text"]})

    lib.write(embedded(first[:1]))  # the first try's first file got through
    lib.writer.commit()
    again = lib.claim("r1", rows, models, {})  # the retry
    # Unsettled contents come again, once each (copy.txt shares note0's content).
    assert sorted(r["content_hash"] for r in again) == sorted(r["content_hash"] for r in first[1:])
    lib.write(embedded(again))
    report = lib.finish_run("r1")
    assert _paths(report, "indexed") == ["copy.txt", "note0.txt", "note1.txt", "note2.txt"]
    assert _paths(report, "skipped") == ["empty.txt"]
    assert not report.get("failed") and not report.get("unchanged")
    assert {lib.show(str(folder / n))["status"] for n in ("copy.txt", "note0.txt", "note1.txt", "note2.txt")} == \
        {"indexed"}
    assert lib.verify()["ok"]


def test_the_sink_hands_the_owner_whole_batches_of_small_blocks(lib, fake_settings, tmp_path, embedders):
    """Ray Data gives a write task several small blocks (the embedding actor's batches) at once:
    the owner gets them as batches of ``write_batch_size`` units, and every file settles."""
    from msearch.files import hash_entry, walk
    from msearch.units import decode_file, embed_units
    from pipelines import schema
    from pipelines.sink import IndexSink

    folder = tmp_path / "notes"
    folder.mkdir()
    for i in range(10):
        (folder / f"note{i}.txt").write_text(f"Note {i}: the harbour ferry leaves at noon.\n")
    models = {"text": "fake-text"}
    lib.begin_run("r1", models)
    rows = [{**hash_entry(e, fake_settings.text.suffixes), "run_id": "r1"} for e in walk([folder])]
    claimed = lib.claim("r1", rows, models, {})
    units = embed_units([u for c in claimed for chunk in decode_file(c, fake_settings, models) for u in chunk],
                        {"text": embedders["text"]})
    blocks = [schema.table(units[i:i + 3], schema.EMBEDDED) for i in range(0, len(units), 3)]

    class Recording:
        def __init__(self):
            self.sizes = []

        def write(self, batch, **kwargs):
            self.sizes.append(len(batch))
            return lib.write(batch, **kwargs)

    owner = Recording()
    # Niceness 0: the sink's write lowers the priority of the process it runs in, here the tests'.
    settings = fake_settings.model_copy(update={"index": fake_settings.index.model_copy(
        update={"write_batch_size": 4, "niceness": 0})})
    out = IndexSink(settings, owner=owner).write(blocks, None)
    assert len(units) == 10 and len(blocks) == 4
    assert owner.sizes == [4, 4, 2]  # not one call per block of 3
    assert out["units"] == 10
    report = lib.finish_run("r1")
    assert len(report["indexed"]) == 10


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux's idle CPU class")
def test_indexing_tasks_take_the_idle_cpu_class_and_the_embedders_only_the_niceness(lib, fake_settings, tmp_path):
    """Hash, decode and write tasks lower their thread to the indexing niceness and the idle CPU
    class, so that they take only cores no one else wants; an embedding actor keeps the ordinary
    class at the niceness. ``MSEARCH_INDEX__IDLE_TASKS=false`` leaves tasks at the niceness, and
    niceness 0 changes nothing. Each stage runs in a thread of its own here: the change is the
    calling thread's, as it is a Ray worker's."""
    import threading
    from types import SimpleNamespace

    from msearch.files import walk
    from pipelines import schema
    from pipelines.sink import IndexSink
    from pipelines.stages import EmbedUnits, decode, hash_and_claim

    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "note.txt").write_text("The harbour ferry leaves at noon.\n")
    models = {"text": "fake-text"}
    lib.begin_run("r1", models)
    files = schema.table([{**e, "error": None} for e in walk([folder])], schema.FILES)
    # The claim and the write reach the library through its client's two calls.
    owner = SimpleNamespace(claim=lambda *a: lib.claim(*a[:4]), write=lib.write)

    def stages(settings) -> dict[str, tuple[int, int]]:
        """Each stage's thread afterwards: (scheduling policy, niceness)."""
        out = {}
        hashed = {}
        units = {}

        def run(name, work):
            def target():
                work()
                out[name] = (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))
            thread = threading.Thread(target=target)
            thread.start()
            thread.join()

        run("hash", lambda: hashed.update(t=hash_and_claim(files, settings, "r1", models, {}, owner=owner)))
        run("decode", lambda: units.update(t=next(iter(decode(hashed["t"], settings, models)))))
        embedded = {}
        run("embed", lambda: embedded.update(t=EmbedUnits(settings, ["text"])(units["t"])))
        run("write", lambda: IndexSink(settings, owner=owner).write([embedded["t"]], None))
        return out

    here = (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))
    index = fake_settings.index
    background = stages(fake_settings.model_copy(update={"index": index.model_copy(update={"niceness": 19})}))
    assert background == {"hash": (os.SCHED_IDLE, 19), "decode": (os.SCHED_IDLE, 19),
                          "embed": (os.SCHED_OTHER, 19), "write": (os.SCHED_IDLE, 19)}
    niced = stages(fake_settings.model_copy(update={"index": index.model_copy(
        update={"niceness": 19, "idle_tasks": False})}))
    assert niced == dict.fromkeys(background, (os.SCHED_OTHER, 19))
    if here[1] == 0:
        left = stages(fake_settings.model_copy(update={"index": index.model_copy(update={"niceness": 0})}))
        assert left == dict.fromkeys(background, here)
    assert (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)) == here  # not the tests' thread
    assert len(lib.finish_run("r1")["indexed"]) == 1


def test_the_runs_files_go_in_blocks_of_one_task_each_and_a_small_run_feeds_every_task():
    """Ray Data gives a task whole blocks until they hold the stage's batch: each block is one
    batch (one task, one claim). A run with fewer files than the tasks at once could take in
    whole batches is cut so that every task gets some."""
    from pipelines.runners import input_blocks
    from pipelines.stages import Stage

    hash_stage = Stage("hash", len, {}, batch_size=512, num_cpus=0.5, tasks=2)
    rows = [{"path": f"/f/{i}", "size": i, "mtime": 1.0, "error": None} for i in range(1100)]

    stage, blocks = input_blocks(hash_stage, rows)
    assert stage.batch_size == 512 and [b.num_rows for b in blocks] == [512, 512, 76]
    assert [r["path"] for b in blocks for r in b.to_pylist()] == [r["path"] for r in rows]  # in order, all

    stage, blocks = input_blocks(hash_stage, rows[:500])
    assert stage.batch_size == 250 and [b.num_rows for b in blocks] == [250, 250]
    stage, blocks = input_blocks(hash_stage, rows[:1])
    assert stage.batch_size == 1 and [b.num_rows for b in blocks] == [1]
    # Where Ray decides how many tasks run at once (a cluster of several nodes), blocks are whole batches.
    stage, blocks = input_blocks(Stage("hash", len, {}, batch_size=512, num_cpus=0.5), rows[:500])
    assert stage.batch_size == 512 and [b.num_rows for b in blocks] == [500]
