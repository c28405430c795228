"""The Ray Data indexing pipeline on a local Ray, with the real (tiny) models."""

import os

import pytest

from conftest import make_corpus, make_settings
from msearch.errors import DataDirBusy
from msearch.library import Library
from msearch.owner import OwnerLock, running_owner

pytestmark = pytest.mark.slow  # Ray, servers or subprocesses: minutes


@pytest.fixture(scope="module")
def indexed(ray_local, tmp_path_factory, tiny_clip, minilm_id):
    from pipelines.index import run_index
    from pipelines.owner import stop_owner

    tmp = tmp_path_factory.mktemp("pipeline")
    corpus = make_corpus(tmp / "corpus")
    settings = make_settings(tmp / "data", models={"clip": tiny_clip, "text": minilm_id})
    summary = run_index(settings, [str(corpus)], progress=False)
    yield settings, corpus, summary
    stop_owner(settings)


def test_summary_counts_every_file(indexed):
    settings, corpus, summary = indexed
    assert summary["seen"] == 12  # the hidden file is not listed
    assert summary["indexed"] == 9 and summary["unchanged"] == 0
    assert [os.path.basename(f["path"]) for f in summary["failed"]] == ["broken.jpg"]
    assert sorted(os.path.basename(f["path"]) for f in summary["skipped"]) == ["empty.txt", "noise.bin"]
    assert summary["missing_models"] == {}
    # Where the run's time went, stage by stage.
    stages = summary["stage_seconds"]
    assert set(stages) == {"list", "plan", "pipeline", "hash", "claim", "decode", "embed", "write", "optimize",
                           "reconcile", "claim_cpu", "write_cpu"}
    assert all(v >= 0 for v in stages.values()) and stages["embed"] > 0 and stages["decode"] > 0
    assert stages["pipeline"] < summary["seconds"]


def test_owner_holds_the_data_dir(indexed):
    settings, _, _ = indexed
    info = running_owner(settings)
    assert info["ray_address"].startswith("127.0.0.1:") and info["pid"] != os.getpid()
    with pytest.raises(DataDirBusy, match="already owned"):
        OwnerLock(settings).acquire()


def test_status_and_search_through_the_owner(indexed):
    from msearch.embed import build_embedder
    from msearch.search import SearchService
    from pipelines.owner import OwnerClient, get_owner

    settings, corpus, _ = indexed
    store = OwnerClient(get_owner(settings, create=False))
    status = store.status()
    assert status["points"]["clip"] == 6 and status["points"]["text"] == 3
    assert status["models"]["text"] == settings.models.text
    text = build_embedder("text", settings)
    clip = build_embedder("clip", settings)
    try:
        service = SearchService({"text": text, "clip": clip}, store, settings)
        results = service.search_text("reviewing the budget for marketing", kinds=["text"])
        assert results[0]["path"] == str(corpus / "docs" / "budget.md")
        assert {r["kind"] for r in results} == {"text"}
        mixed = service.search_text("budget")
        assert {r["kind"] for r in mixed} == {"text", "image"}
        image = service.search_image((corpus / "photos" / "img3.jpg").read_bytes(), top_k=3)
        assert image[0]["path"] == str(corpus / "photos" / "img3.jpg")
        assert image[0]["thumbnail"].startswith("/api/v1/thumbnails/")
    finally:
        text.close()
        clip.close()


def test_second_run_finds_everything_unchanged(indexed):
    from pipelines.index import run_index

    settings, corpus, _ = indexed
    again = run_index(settings, [str(corpus)], progress=False)
    assert again["indexed"] == 0 and again["unchanged"] == 9
    assert len(again["failed"]) == 1  # still broken, still reported


def test_edited_and_new_files_are_picked_up(indexed):
    from pipelines.index import run_index
    from pipelines.owner import OwnerClient, get_owner

    settings, corpus, _ = indexed
    (corpus / "docs" / "gardening.txt").write_text("Prune the roses in early spring.\n")
    (corpus / "docs" / "new.txt").write_text("A brand new note about the harbour at dawn.\n")
    summary = run_index(settings, [str(corpus)], progress=False)
    assert summary["indexed"] == 2 and summary["unchanged"] == 8
    shown = OwnerClient(get_owner(settings, create=False)).show(str(corpus / "docs" / "gardening.txt"))
    assert shown["units"][0]["text"] == "Prune the roses in early spring."


def test_store_is_released_when_the_owner_stops(indexed, tmp_path):
    from pipelines.index import run_index
    from pipelines.owner import stop_owner

    _, _, _ = indexed
    settings = make_settings(tmp_path / "data", models={"clip": "fake", "text": "fake"})
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("hello there")
    assert run_index(settings, [str(tmp_path / "in")], progress=False)["indexed"] == 1
    assert stop_owner(settings)
    assert running_owner(settings) is None
    lib = Library(settings)  # opens: nobody else holds the stores now
    assert lib.status()["files"] == {"indexed": 1}
    lib.close()


def test_videos_go_through_the_pipeline(ray_local, tmp_path, tiny_clip):
    from conftest import make_video
    from pipelines.index import run_index
    from pipelines.owner import OwnerClient, get_owner, stop_owner

    folder = tmp_path / "videos"
    make_video(folder / "a.mkv", [("testsrc2", 2.0), ("smptebars", 2.0)], codec=["-c:v", "libx264", "-preset", "ultrafast"])
    make_video(folder / "b.webm", [("color=c=blue", 12.0)], codec=["-c:v", "libvpx", "-deadline", "realtime"])
    (folder / "c.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(200))
    settings = make_settings(tmp_path / "data", models={"clip": tiny_clip, "text": "fake"})
    try:
        summary = run_index(settings, [str(folder)], progress=False)
        assert summary["indexed"] == 2
        assert [os.path.basename(f["path"]) for f in summary["failed"]] == ["c.mp4"]
        owner = OwnerClient(get_owner(settings, create=False))
        a = owner.show(str(folder / "a.mkv"))
        assert [(u["start_s"], u["end_s"]) for u in a["units"]] == [(0.0, 2.0), (2.0, 4.0)]
        b = owner.show(str(folder / "b.webm"))
        assert len(b["units"]) == 2 and b["media"]["video_codec"] == "vp8"  # a 12 s static shot, split
        assert owner.status()["kinds"]["video"] == {"indexed": 2, "failed": 1}
    finally:
        stop_owner(settings)


def test_names_that_are_not_utf8_are_recorded_through_the_pipeline(ray_local, tmp_path):
    from pipelines.index import run_index
    from pipelines.owner import stop_owner

    root = tmp_path / "names"
    root.mkdir()
    (root / os.fsdecode(b"caf\xe9-latin1.txt")).write_text("a note whose name is Latin-1 bytes\n")
    (root / "一月 notes.txt").write_text("a note with a Chinese name\n")
    settings = make_settings(tmp_path / "data", models={"clip": "fake", "text": "fake"})
    try:
        summary = run_index(settings, [str(root)], progress=False)
    finally:
        stop_owner(settings)
    assert summary["indexed"] == 1
    (failed,) = summary["failed"]
    assert failed["path"].endswith("caf\\xe9-latin1.txt") and "not valid UTF-8" in failed["error"]


def test_a_decode_task_hands_its_units_on_while_it_decodes(ray_local, tmp_path):
    """A stage's output leaves a task in blocks of ``MSEARCH_INDEX__BLOCK_MB``: the units of a
    task's first pictures reach the next stage before it has decoded its last ones. (With Ray
    Data's default of 128 MB, a task's units left it all at once, when it ended.)"""
    import uuid

    from conftest import write_image
    from msearch.files import walk
    from pipelines.owner import OwnerClient, get_owner, stop_owner
    from pipelines.runners import dataset
    from pipelines.stages import index_stages

    for i in range(12):
        write_image(tmp_path / "pictures" / f"{i:02d}.png", seed=i)
    models = {"clip": "fake-clip"}

    def blocks(block_mb: float) -> list[int]:
        settings = make_settings(tmp_path / f"data-{block_mb}", models={"clip": "fake", "text": "none"},
                                 index={"decode_block_units": 2, "block_mb": block_mb})
        owner = OwnerClient(get_owner(settings))
        try:
            run_id = uuid.uuid4().hex
            owner.begin_run(run_id, models, None)
            files = owner.plan(run_id, list(walk([tmp_path / "pictures"])), models)
            # One hash-and-decode task for all twelve pictures.
            stages = index_stages(settings, run_id, models, {}, [], False, {"hash": 0.5, "decode": 0.5}, tasks=1)
            ds = dataset(stages, files, settings)
            return [len(b) for b in ds.iter_batches(batch_size=None, batch_format="pyarrow")]
        finally:
            stop_owner(settings)

    assert blocks(128) == [12]  # Ray Data's default: the task's units in one block, at its end
    streamed = blocks(0.02)  # a picture's unit here is ~18 kB: every block the decode yields goes on
    assert sum(streamed) == 12 and len(streamed) >= 6
