"""Audio: windows and streaming decode, speech with the packaged Whisper, sounds with a tiny CLAP,
video soundtracks through the Ray pipeline, bad audio."""

from __future__ import annotations

import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, ffmpeg, index_direct, make_settings, make_video, sound_file, speak, speech_span

from msearch.embed import build_embedder
from msearch.embed.fake import FakeEmbedder
from msearch.embed.resolve import resolve_whisper
from msearch.library import Library
from msearch.media import audio
from msearch.search import SearchService
from msearch.speech import Transcriber

BUDGET = "The interviewee says the budget for the new bridge was far too small."
RAIN = "Heavy rain is expected across the northern valleys tomorrow morning."
TOMATO = "Please remember to water the tomato plants every evening."


def lavfi(path: Path, source: str, seconds: float, rate: int = 22050, extra: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"{source}:duration={seconds}" if "=" in source else f"{source}=duration={seconds}",
                    "-ar", str(rate), "-ac", "1", *(extra or []), str(path)], check=True, timeout=300)
    return path


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory) -> str:
    return resolve_whisper("base", tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def transcriber(whisper_dir, tmp_path_factory) -> Transcriber:
    settings = make_settings(tmp_path_factory.mktemp("t"), models={"whisper": whisper_dir})
    return Transcriber(whisper_dir, settings, model_id="base", cpu_threads=2)


# -- decoding -------------------------------------------------------------------------------
def test_windows_cover_the_sound_and_skip_silence(tmp_path):
    path = tmp_path / "tone.wav"
    subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "anullsrc=r=22050:cl=mono",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050:duration=15",
                    "-filter_complex", "[0]atrim=duration=10[s];[s][1]concat=n=2:v=0:a=1", str(path)],
                   check=True, timeout=60)
    got = [(w.start_s, w.end_s) for w in audio.windows(path, ffmpeg(), 48000, 10, 5, 60, -60)]
    assert got == [(5.0, 15.0), (10.0, 20.0), (15.0, 25.0)]  # 0-10 s is silent

    short = lavfi(tmp_path / "short.wav", "sine=frequency=300", 3)
    (only,) = audio.windows(short, ffmpeg(), 48000, 10, 5, 60, -60)
    assert (only.start_s, only.end_s) == (0.0, 3.0) and only.samples.size == 3 * 48000

    odd = lavfi(tmp_path / "odd.wav", "sine=frequency=300", 22)  # a 2 s tail after the last full window
    assert [(w.start_s, w.end_s) for w in audio.windows(odd, ffmpeg(), 48000, 10, 5, 60, -60)] == \
        [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0), (15.0, 22.0)]


def test_a_long_recording_is_decoded_in_bounded_memory(tmp_path):
    hour = lavfi(tmp_path / "hour.wav", "sine=frequency=200", 3600, rate=8000)
    tracemalloc.start()
    try:
        n = sum(1 for _ in audio.windows(hour, ffmpeg(), 48000, 10, 5, 60, -60))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 719
    # The whole hour at 48 kHz would be 345 MB; one block (60 s) is 5.8 MB.
    assert peak < 40 * 2**20, peak


# -- speech -----------------------------------------------------------------------------------
def test_spoken_phrases_are_found_at_their_time(tmp_path, transcriber):
    root = tmp_path / "clips"
    clips = {
        "budget.wav": speak(root / "budget.wav", BUDGET),
        "rain.mp3": speak(root / "rain.mp3", RAIN),
        "late.flac": speak(root / "late.flac", TOMATO, lead_s=8.0),
        "noise.ogg": lavfi(root / "noise.ogg", "anoisesrc=amplitude=0.3:seed=3", 6, extra=["-c:a", "libvorbis"]),
    }
    settings = make_settings(tmp_path / "data", models={"text": "sentence-transformers/all-MiniLM-L6-v2"})
    text = build_embedder("text", settings)
    lib = Library(settings)
    try:
        report = index_direct(lib, settings, [root], {"text": text}, transcriber=transcriber)
        assert sorted(Path(i["path"]).name for i in report["indexed"]) == ["budget.wav", "late.flac", "rain.mp3"]
        # Noise has no speech, and without a sound model there is nothing else to index in it.
        (skipped,) = report["skipped"]
        assert skipped["path"].endswith("noise.ogg") and "no speech found" in skipped["error"]
        service = SearchService({"text": text}, lib, settings)
        for query, name in [("the budget for the bridge", "budget.wav"), ("rain in the valleys", "rain.mp3"),
                            ("water the tomato plants", "late.flac")]:
            results = service.search_text(query, top_k=3)
            top = results[0]
            assert top["path"].endswith(name), (query, results)
            assert top["kind"] == "audio" and top["text"]
            start, end = speech_span(clips[name])
            assert top["start_s"] <= start + 0.5 and top["end_s"] >= end - 0.5, (top, start, end)
        late = service.search_text("water the tomato plants", top_k=1)[0]
        assert late["start_s"] >= 7.0  # the words come after eight seconds of silence
        # Keyword search over what was said (BM25 in Qdrant).
        assert service.search_text("tomato", top_k=1)[0]["path"].endswith("late.flac")

        shown = lib.show(str(clips["late.flac"]))
        assert shown["media"]["language"] == "en" and shown["media"]["audio_codec"] == "flac"
        (segment,) = shown["transcript"]
        assert "tomato" in segment["text"].lower() and segment["start_s"] >= 7.0
        assert shown["sound_windows"] == []  # no sound model
    finally:
        lib.close()
        text.close()


def test_a_long_recording_is_transcribed_block_by_block(tmp_path, whisper_dir):
    first = speak(tmp_path / "a.wav", BUDGET, lead_s=2.0)
    second = speak(tmp_path / "b.wav", TOMATO, lead_s=1.0)
    joined = tmp_path / "long.wav"
    subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-i", str(first), "-f", "lavfi",
                    "-i", "anullsrc=r=44100:cl=mono:d=60", "-i", str(second), "-filter_complex",
                    "[0][1][2]concat=n=3:v=0:a=1", str(joined)], check=True, timeout=60)
    first_s = audio.probe(first, ffmpeg()).duration
    second_at = first_s + 60 + speech_span(second)[0]
    settings = make_settings(tmp_path / "d", speech={"block_s": 60})
    out = Transcriber(whisper_dir, settings, cpu_threads=2).transcribe(joined, ffmpeg())
    assert out.language == "en" and out.duration_s > 70
    texts = " ".join(s.text.lower() for s in out.segments)
    assert "budget" in texts and "tomato" in texts
    (late,) = [s for s in out.segments if "tomato" in s.text.lower()]
    assert abs(late.start_s - second_at) < 1.5, (late, second_at)


# -- sounds -----------------------------------------------------------------------------------
def test_tiny_clap_windows_are_the_models_output_and_find_themselves(tmp_path, tiny_clap):
    import torch
    from transformers import AutoProcessor, ClapModel

    root = tmp_path / "sounds"
    root.mkdir()
    sounds = sound_file(root / "mix.wav")
    lavfi(root / "hum.flac", "sine=frequency=100", 12)
    settings = make_settings(tmp_path / "data", models={"clap": tiny_clap})
    clap = build_embedder("clap", settings)
    lib = Library(settings)
    try:
        report = index_direct(lib, settings, [root], {"clap": clap})
        assert len(report["indexed"]) == 2
        windows = list(audio.windows(sounds, ffmpeg(), 48000, 10, 5, 60, -60))
        stored = [h for h in lib.vectors.scroll("clap") if h.payload["content_hash"] ==
                  lib.show(str(sounds))["content_hash"]]
        stored.sort(key=lambda h: h.payload["unit"])
        assert [(h.payload["start_s"], h.payload["end_s"]) for h in stored] == \
            [(w.start_s, w.end_s) for w in windows]
        vectors = lib.vectors.vectors("clap", [h.id for h in stored])
        model, processor = ClapModel.from_pretrained(tiny_clap).eval(), AutoProcessor.from_pretrained(tiny_clap)
        for hit, w in zip(stored, windows):
            inputs = processor(audios=[w.samples.astype(np.float32) / 32768], sampling_rate=48000,
                               return_tensors="pt", padding=True)
            with torch.no_grad():
                want = model.get_audio_features(input_features=inputs["input_features"])[0].numpy()
            want /= np.linalg.norm(want)
            assert float(np.dot(vectors[hit.id], want)) >= 0.9999

        # A window's own sound, uploaded as a query, finds that window first.
        service = SearchService({"clap": clap}, lib, settings)
        for w in windows[1:3]:
            results = service.search_audio(audio.wav_bytes(w.samples, 48000), top_k=3)
            assert results[0]["path"] == str(sounds.resolve()) or results[0]["path"] == str(sounds)
            assert (results[0]["start_s"], results[0]["end_s"]) == (w.start_s, w.end_s), results
        # Text queries go through CLAP's text tower.
        assert service.search_text("a low hum", top_k=2)
        shown = lib.show(str(sounds))
        assert shown["sound_windows"] == [{"start_s": w.start_s, "end_s": w.end_s} for w in windows]
    finally:
        lib.close()
        clap.close()


def test_cli_searches_by_an_example_sound(tmp_path, tiny_clap):
    import json
    import os

    root = tmp_path / "sounds"
    root.mkdir()
    sounds = sound_file(root / "mix.wav")
    query = tmp_path / "query.wav"
    w = list(audio.windows(sounds, ffmpeg(), 48000, 10, 5, 60, -60))[2]
    query.write_bytes(audio.wav_bytes(w.samples, 48000))
    settings = make_settings(tmp_path / "data", models={"clap": tiny_clap})
    lib = Library(settings)
    index_direct(lib, settings, [root], {"clap": build_embedder("clap", settings)})
    lib.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSEARCH_")}
    env.update(MSEARCH_DATA_DIR=str(tmp_path / "data"), MSEARCH_MODELS__CLAP=tiny_clap, MSEARCH_MODELS__CLIP="none",
               MSEARCH_MODELS__TEXT="none", MSEARCH_MODELS__WHISPER="none", MSEARCH_DASHBOARD="false")
    out = subprocess.run([str(ROOT / ".venv/bin/msearch"), "search", "--audio", str(query), "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    top = json.loads(out.stdout)[0]
    assert top["path"] == str(sounds) and (top["start_s"], top["end_s"]) == (w.start_s, w.end_s)


# -- bad audio --------------------------------------------------------------------------------
def test_bad_audio_is_recorded_and_harms_nothing(tmp_path, transcriber):
    rng = np.random.default_rng(7)
    root = tmp_path / "bad"
    root.mkdir()
    good = speak(root / "good.wav", BUDGET)
    (root / "random.mp3").write_bytes(rng.bytes(50_000))
    (root / "junk_id3.mp3").write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" + rng.bytes(50_000))
    (root / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x10\x00WAVEfmt " + rng.bytes(20_000))
    lavfi(root / "zero.wav", "anullsrc=r=22050:cl=mono", 0)
    make_video(root / "mute.mp4", [("testsrc", 2.0)])
    settings = make_settings(tmp_path / "data", models={"clip": "fake", "text": "fake", "clap": "fake"})
    embedders = {r: FakeEmbedder(r) for r in ("clip", "text", "clap")}
    lib = Library(settings)
    try:
        report = index_direct(lib, settings, [root], embedders, transcriber=transcriber)
        failed = {Path(f["path"]).name: f["error"] for f in report["failed"]}
        skipped = {Path(f["path"]).name: f["error"] for f in report["skipped"]}
        indexed = sorted(Path(f["path"]).name for f in report["indexed"])
        assert indexed == ["good.wav", "mute.mp4"], (failed, skipped)
        assert set(failed) == {"junk_id3.mp3", "corrupt.wav"}, failed
        assert all("ffmpeg" in e for e in failed.values()), failed
        assert "unrecognised" in skipped["random.mp3"]
        assert "zero.wav" in skipped
        mute = lib.show(str(root / "mute.mp4"))
        assert mute["media"]["audio_codec"] is None and mute["transcript"] == [] and mute["sound_windows"] == []
        good_shown = lib.show(str(good))
        assert good_shown["transcript"] and good_shown["sound_windows"]
        results = SearchService(embedders, lib, settings).search_text("budget bridge", top_k=1)
        assert results[0]["path"] == str(good)
    finally:
        lib.close()


def test_units_that_arrive_out_of_order_still_settle_the_file(tmp_path):
    root = tmp_path / "long"
    path = lavfi(root / "tones.wav", "sine=frequency=330", 40)
    settings = make_settings(tmp_path / "data", models={"clap": "fake"}, audio={"window_s": 1.0, "hop_s": 0.5})
    lib = Library(settings)
    try:
        report = index_direct(lib, settings, [root], {"clap": FakeEmbedder("clap")}, reverse=True)
        assert [Path(i["path"]).name for i in report["indexed"]] == ["tones.wav"]
        shown = lib.show(str(path))
        assert shown["units_expected"] == 79 and len(shown["sound_windows"]) == 79  # streamed in 3 chunks
        assert lib.status()["points"] == {"clap": 79}
    finally:
        lib.close()
