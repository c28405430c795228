"""Model actors kept between runs (watch, the control API's queue, jobs on a cluster that
outlives them): the next run embeds and transcribes with the same actors, an idle one exits, a
lost one is started again, and other models get other actors."""

import time

import pytest

from conftest import make_settings, speak
from msearch.library import Library

pytestmark = pytest.mark.slow  # Ray: minutes


def _kept(ray, settings, stage: str = "embed") -> list[dict]:
    """The kept actors of ``stage`` (embed, transcribe) of these settings that are alive: name,
    actor id, process id."""
    from pipelines.kept import names, transcriber_names

    out = []
    for name in (names(settings, ["clip", "text"], settings.index.embed_actors) if stage == "embed"
                 else transcriber_names(settings, settings.index.whisper_actors)):
        try:
            handle = ray.get_actor(name, namespace="msearch")
            out.append({"name": name, "id": handle._actor_id.hex(), "pid": ray.get(handle.ping.remote(), timeout=60)})
        except (ValueError, ray.exceptions.RayActorError):
            pass
    return out


def _note(folder, name: str, text: str) -> None:
    (folder / name).write_text(text + "\n")


def test_later_runs_embed_with_the_same_kept_actor(ray_local, tmp_path):
    from pipelines.index import run_index
    from pipelines.owner import stop_owner

    folder = tmp_path / "folder"
    folder.mkdir()
    _note(folder, "a.txt", "the harbour at dawn")
    settings = make_settings(tmp_path / "data", models={"clip": "fake", "text": "fake"})
    try:
        first = run_index(settings, [str(folder)], progress=False, keep_actors=True)
        assert first["indexed"] == 1
        kept = _kept(ray_local, settings)
        assert len(kept) == 1 and kept[0]["name"].startswith("msearch-embed-"), kept
        for i in range(2):
            _note(folder, f"n{i}.txt", f"note {i}: the ferry timetable")
            later = run_index(settings, [str(folder)], progress=False, keep_actors=True)
            assert later["indexed"] == 1 and later["unchanged"] == 1 + i, later
            assert _kept(ray_local, settings) == kept  # the same actor, the same process: no model load
        # What the kept actor embedded is what a pool per run embeds.
        _note(folder, "pool.txt", "the ferry timetable")
        pooled = run_index(settings, [str(folder)], progress=False)
        assert pooled["indexed"] == 1
    finally:
        stop_owner(settings)
    # Every note is stored with its model's vector, whichever path embedded it.
    from msearch.embed.fake import FakeEmbedder

    fake = FakeEmbedder("text")
    lib = Library(settings)
    try:
        points = lib.vectors.scroll("text")
        assert len(points) == 4
        stored = lib.vectors.vectors("text", [h.id for h in points])
        for h in points:
            want = fake.embed_texts([h.payload["text"]])[0]
            assert abs(sum(a * b for a, b in zip(stored[h.id], want)) - 1.0) < 1e-5, h.payload["text"]
    finally:
        lib.close()


def test_decode_tasks_hand_their_units_to_the_kept_embedder_while_they_decode(ray_local, tmp_path):
    from msearch.files import hash_entry, walk
    from pipelines.kept import Embedders, names, stop
    from pipelines.stages import _units, index_stages

    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(12):
        _note(folder, f"n{i:02d}.txt", f"note {i}: the ferry timetable")
    settings = make_settings(tmp_path / "data", models={"clip": "fake", "text": "fake"}, index={"embed_batch_size": 2})
    roles = ["clip", "text"]
    actors = names(settings, roles, 1)
    cpus = {"hash": 1.0, "decode": 1.0, "embed": 1.0, "whisper": 0.0, "write": 0.1}
    stages = index_stages(settings, "run", {"clip": "fake-clip", "text": "fake-text"}, {}, roles, False, cpus,
                          kept={"embed": actors})
    # No stage of calls between decoding and writing: a decode task's one call takes its block.
    assert [s.name for s in stages] == ["hash", "decode"]
    assert stages[1].batch_size is None
    embedders = stages[1].kwargs["embed"]
    assert isinstance(embedders, Embedders)

    rows = [{**hash_entry(e, settings.text.suffixes), "run_id": "run"} for e in sorted(walk([folder]),
                                                                                         key=lambda e: e["path"])]
    made = []  # batches decoded so far

    def decoded():
        for batch in _units(rows, settings, {"clip": "fake-clip", "text": "fake-text"}, embedders.batch_size):
            made.append(batch)
            yield batch

    out = []  # (batches decoded when this one came back embedded, its units)
    try:
        for table in embedders.embed(decoded()):
            out.append((len(made), table.to_pylist()))
    finally:
        stop(actors)
    assert [len(units) for _, units in out] == [2] * 6
    # The first batch came back while the later ones were still to decode: the task keeps
    # IN_FLIGHT batches at the actor, no more.
    assert [n for n, _ in out] == [min(6, i + 1 + Embedders.IN_FLIGHT) for i in range(6)]
    units = [u for _, batch in out for u in batch]
    assert [u["path"] for u in units] == [r["path"] for r in rows]  # in order
    assert all(u["vector"] and u["model"] == "fake-text" and u["sparse_indices"] for u in units)


def test_later_runs_transcribe_with_the_same_kept_actor(ray_local, tmp_path):
    import json

    from msearch.embed.resolve import resolve_whisper
    from pipelines.index import run_index
    from pipelines.owner import OwnerClient, get_owner, stop_owner

    folder = tmp_path / "folder"
    folder.mkdir()
    _note(folder, "a.txt", "the harbour at dawn")
    settings = make_settings(tmp_path / "data", models={"clip": "fake", "text": "fake",
                                                        "whisper": resolve_whisper("base", tmp_path / "models")})
    try:
        # A run without recordings starts no transcriber (none holds a CPU share for nothing).
        assert run_index(settings, [str(folder)], progress=False, keep_actors=True)["indexed"] == 1
        assert _kept(ray_local, settings, "transcribe") == []
        speak(folder / "budget.wav", "The budget for the new bridge was far too small.")
        first = run_index(settings, [str(folder)], progress=False, keep_actors=True)
        assert first["indexed"] == 1 and not first["failed"], first
        kept = _kept(ray_local, settings, "transcribe")
        assert len(kept) == 1 and kept[0]["name"].startswith("msearch-transcribe-"), kept
        # A run without recordings passes its files by; one with a recording transcribes it with
        # the same actor (Whisper loaded once).
        _note(folder, "b.txt", "a note with nothing to say aloud")
        assert run_index(settings, [str(folder)], progress=False, keep_actors=True)["indexed"] == 1
        speak(folder / "ferry.wav", "The ferry leaves the island every morning at seven.")
        later = run_index(settings, [str(folder)], progress=False, keep_actors=True)
        assert later["indexed"] == 1 and later["unchanged"] == 3 and not later["failed"], later
        assert _kept(ray_local, settings, "transcribe") == kept
        store = OwnerClient(get_owner(settings, create=False))
        words = {name: json.dumps(store.show(str(folder / name))["transcript"]).lower()
                 for name in ("budget.wav", "ferry.wav")}
    finally:
        stop_owner(settings)
    assert "budget" in words["budget.wav"] and "island every morning" in words["ferry.wav"], words


def test_an_idle_kept_actor_exits_and_a_lost_one_is_started_again(ray_local, tmp_path):
    import ray

    from pipelines.index import run_index
    from pipelines.owner import stop_owner

    folder = tmp_path / "folder"
    folder.mkdir()
    _note(folder, "a.txt", "rain over the valley")
    settings = make_settings(tmp_path / "data", models={"clip": "fake", "text": "fake"},
                             index={"embed_keep_s": 1.0})
    try:
        assert run_index(settings, [str(folder)], progress=False, keep_actors=True)["indexed"] == 1
        deadline = time.monotonic() + 60
        while _kept(ray_local, settings) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _kept(ray_local, settings), "the idle embedding actor did not exit"
        # The next run starts one again.
        _note(folder, "b.txt", "a bridge in the storm")
        assert run_index(settings, [str(folder)], progress=False, keep_actors=True)["indexed"] == 1
        # One killed between runs (an out-of-memory kill, say) is started again too.
        for actor in _kept(ray_local, settings):
            ray.kill(ray.get_actor(actor["name"], namespace="msearch"), no_restart=True)
        _note(folder, "c.txt", "an orchard in winter")
        assert run_index(settings, [str(folder)], progress=False, keep_actors=True)["indexed"] == 1
    finally:
        stop_owner(settings)


def test_a_kept_actor_that_takes_two_calls_does_not_exit_during_one(ray_local):
    """An embedding actor takes a call per model stream at once, so its exit on idle runs beside
    a call: it waits until no call is running."""
    import ray

    from pipelines.kept import _Kept

    class Slow(_Kept):
        def __init__(self, keep_s):
            super().__init__(lambda seconds: time.sleep(seconds) or seconds, keep_s)

    actor = ray.remote(Slow).options(max_concurrency=2, num_cpus=0).remote(0.3)
    assert ray.get(actor.ping.remote(), timeout=60)
    # The first call outlasts keep_s, and the expiry checks run beside it; a second call comes
    # while it runs (an actor that had begun to exit would refuse it).
    first = actor.run.remote(2.0)
    time.sleep(1.0)
    assert ray.get(actor.run.remote(0.1), timeout=60) == 0.1
    assert ray.get(first, timeout=60) == 2.0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            ray.get(actor.ping.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the idle actor did not exit after its call")


def test_other_models_or_settings_get_other_kept_actors(tmp_path):
    from pipelines.kept import names

    fake = make_settings(tmp_path / "a", models={"clip": "fake", "text": "fake"})
    same = make_settings(tmp_path / "b", models={"clip": "fake", "text": "fake"})  # another data dir
    other = make_settings(tmp_path / "c", models={"clip": "fake", "text": "sentence-transformers/all-MiniLM-L6-v2"})
    gpu = make_settings(tmp_path / "d", models={"clip": "fake", "text": "fake"}, index={"embed_num_gpus": 1})
    assert names(fake, ["clip", "text"], 2) == names(same, ["clip", "text"], 2)
    assert len(set(names(fake, ["clip", "text"], 2))) == 2
    assert names(fake, ["clip", "text"], 1) != names(other, ["clip", "text"], 1)
    assert names(fake, ["clip", "text"], 1) != names(gpu, ["clip", "text"], 1)
    assert names(fake, ["clip", "text"], 1) != names(fake, ["text"], 1)
    from pipelines.kept import transcriber_names

    base = make_settings(tmp_path / "e", models={"whisper": "base"})
    assert transcriber_names(base, 1) == transcriber_names(make_settings(tmp_path / "f", models={"whisper": "base"}), 1)
    assert transcriber_names(base, 1) != transcriber_names(make_settings(tmp_path / "g", models={"whisper": "small"}), 1)
    assert transcriber_names(base, 1) != transcriber_names(
        make_settings(tmp_path / "h", models={"whisper": "base"}, speech={"language": "de"}), 1)
    assert transcriber_names(base, 1)[0].startswith("msearch-transcribe-") and transcriber_names(base, 1) != names(
        base, ["clip", "text"], 1)


def test_a_recording_its_transcriber_dies_on_twice_is_recorded_and_the_rest_goes_on(ray_local, tmp_path):
    """A transcriber that dies on a file is started again once; a second death on it gives the
    file a transcription error (its decode records it) instead of failing the run."""
    import json
    import os

    from pipelines.kept import Transcribers

    class DiesOnClips:  # a transcription actor that dies on one file
        def __init__(self, settings, keep_s):
            pass

        def run(self, batch, keep_s=None):
            if batch.column("path")[0].as_py().endswith("clip.wav"):
                os._exit(1)
            return batch

    settings = make_settings(tmp_path / "data")
    rows = [{"path": str(tmp_path / name), "kind": "audio", "content_hash": name} for name in ("clip.wav", "talk.wav")]
    transcribers = Transcribers(settings, ["msearch-test-dies-on-clips"], {"num_cpus": 0}, 60, DiesOnClips)
    out = {os.path.basename(r["path"]): r.get("speech") for r in transcribers.transcribe(rows)}
    assert out["talk.wav"] is None  # passed by this actor as it came
    assert json.loads(out["clip.wav"])["error"].startswith("transcription failed: the transcription actor died")
