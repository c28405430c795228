"""Speech and sound through the Ray Data pipeline: a video's spoken soundtrack found at its time."""

import subprocess

import pytest

from conftest import ffmpeg, make_settings, make_video, speak, speech_span

from msearch.embed.resolve import resolve_whisper

pytestmark = pytest.mark.slow  # Ray, servers or subprocesses: minutes

BUDGET = "The interviewee says the budget for the new bridge was far too small."


def test_a_videos_words_are_found_at_the_right_time(ray_local, tmp_path, minilm_id):
    from msearch.embed import build_embedder
    from msearch.embed.fake import FakeEmbedder
    from msearch.search import SearchService
    from pipelines.index import run_index
    from pipelines.owner import OwnerClient, get_owner, stop_owner

    root = tmp_path / "media"
    voice = speak(tmp_path / "voice.wav", BUDGET, lead_s=4.0, tail_s=3.0)
    silent = make_video(tmp_path / "pattern.mp4", [("testsrc", 6.0), ("smptebars", 6.0)])
    video = root / "interview.mp4"
    root.mkdir()
    subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-i", str(silent), "-i", str(voice),
                    "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", str(video)],
                   check=True, timeout=120)
    tones = root / "tones.m4a"
    subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=500:duration=30", "-c:a", "aac", str(tones)], check=True, timeout=60)
    whisper = resolve_whisper("base", tmp_path / "models")
    settings = make_settings(tmp_path / "data", models={"clip": "fake", "text": minilm_id, "clap": "fake",
                                                        "whisper": whisper},
                             audio={"window_s": 2.0, "hop_s": 1.0})
    try:
        summary = run_index(settings, [str(root)], progress=False)
        assert summary["indexed"] == 2 and not summary["failed"] and not summary["skipped"], summary
        # The recordings went to the run's own transcription actor, which ended with the run.
        from ray._private.state import state  # the GCS's actor table (this cluster has no dashboard)

        transcribers = [(a["ActorClassName"], a["State"]) for a in state.actor_table(None).values()
                        if (a.get("Name") or "").startswith("msearch-transcribe-")]
        assert transcribers == [("TranscribeService", "DEAD")], transcribers
        store = OwnerClient(get_owner(settings, create=False))
        shown = store.show(str(video))
        assert shown["media"]["language"] == "en" and shown["media"]["scenes"] == 2
        start, end = speech_span(voice)
        # Windows only where there is sound (the voice), none in the silence around it.
        assert shown["sound_windows"] and shown["transcript"]
        assert all(w["end_s"] > start and w["start_s"] < end for w in shown["sound_windows"])
        assert len(store.show(str(tones))["sound_windows"]) == 29  # 29 windows: several blocks through Ray Data
        text = build_embedder("text", settings)
        try:
            service = SearchService({"text": text, "clip": FakeEmbedder("clip"), "clap": FakeEmbedder("clap")},
                                    store, settings)
            results = service.search_text("the budget for the bridge", top_k=10)
            top = results[0]
        finally:
            text.close()
        assert top["path"] == str(video) and top["kind"] == "video"
        assert start - 0.6 <= top["start_s"] <= start + 0.5 and top["end_s"] >= end - 0.5, (top, start, end)
        assert "budget" in top["text"].lower()
        # The keyframe, the sound and the speech of that moment are one result: it has the
        # scene's thumbnail, and no other result of the video overlaps it.
        assert top["thumbnail"]
        for other in results[1:]:
            if other["path"] == str(video):
                assert other["end_s"] <= top["start_s"] or other["start_s"] >= top["end_s"], (top, other)
    finally:
        stop_owner(settings)
