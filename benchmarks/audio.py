"""Audio throughput on this machine: transcription speed of the packaged Whisper (audio seconds
per second) and CLAP window throughput (windows per second), each with the FFmpeg decode that
feeds it measured apart.

    .venv/bin/python benchmarks/audio.py [--speech-s 120] [--sound-s 300] [--out results.json]

Speech is espeak-ng reading sentences with pauses (espeak-ng must be installed). CLAP has no
weights offline, so the sound model is the laion/clap-htsat-unfused architecture (RoBERTa-base
text tower, HTSAT audio tower) with random weights, loaded through infinity-emb as the real one
would be: the same computation per window. Its builder is shared with the tests.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import report, run_info, time_batches

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SENTENCES = [
    "The interviewee says the budget for the new bridge was far too small.",
    "Heavy rain is expected across the northern valleys tomorrow morning.",
    "Please remember to water the tomato plants every evening.",
    "The committee will publish its final report at the end of the month.",
    "A red car drove slowly through the rain toward the old harbour.",
]


def make_speech(path: Path, seconds: float, ffmpeg: str) -> None:
    """Sentences with one-second pauses, repeated to ``seconds``."""
    parts = []
    with tempfile.TemporaryDirectory() as td:
        total, i = 0.0, 0
        while total < seconds:
            part = Path(td) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-s", "150", "-w", str(part), SENTENCES[i % len(SENTENCES)]], check=True)
            parts.append(part)
            total += os.path.getsize(part) / (22050 * 2) + 1.0
            i += 1
        inputs = [a for p in parts for a in ("-i", str(p))]
        graph = "".join(f"[{i}]apad=pad_dur=1[a{i}];" for i in range(len(parts)))
        graph += "".join(f"[a{i}]" for i in range(len(parts))) + f"concat=n={len(parts)}:v=0:a=1"
        subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", *inputs, "-filter_complex", graph,
                        "-t", str(seconds), str(path)], check=True)


def make_sounds(path: Path, seconds: float, ffmpeg: str) -> None:
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"anoisesrc=color=pink:amplitude=0.3:duration={seconds}", "-f", "lavfi", "-i",
                    f"sine=frequency=440:duration={seconds}", "-filter_complex", "amix=inputs=2",
                    "-c:a", "aac", str(path)], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speech-s", type=float, default=120.0)
    parser.add_argument("--sound-s", type=float, default=300.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from msearch.embed.infinity import InfinityClap
    from msearch.embed.resolve import resolve_whisper
    from msearch.media import audio
    from msearch.media.video import ffmpeg_binary
    from msearch.settings import Settings
    from msearch.speech import Transcriber
    from tiny_models import build_tiny_clap

    ffmpeg = ffmpeg_binary()
    out = run_info()
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        settings = Settings(data_dir=td / "data")

        # -- speech -------------------------------------------------------------------------
        speech = td / "speech.wav"
        make_speech(speech, args.speech_s, ffmpeg)
        start = time.perf_counter()
        n = sum(len(b) for b in audio.pcm_blocks(speech, ffmpeg, audio.WHISPER_RATE, 60, dtype="float32"))
        decode_s = time.perf_counter() - start
        model = Transcriber(resolve_whisper("base", td / "models"), settings, model_id="base",
                            cpu_threads=args.threads)
        model.transcribe(speech, ffmpeg)  # warm-up
        start = time.perf_counter()
        transcript = model.transcribe(speech, ffmpeg)
        seconds = time.perf_counter() - start
        audio_s = n / audio.WHISPER_RATE
        out["speech"] = {
            "model": "whisper base (int8, packaged)", "threads": args.threads, "beam_size": settings.speech.beam_size,
            "audio_s": round(audio_s, 1), "seconds": round(seconds, 2),
            "audio_s_per_s": round(audio_s / seconds, 2), "decode_only_audio_s_per_s": round(audio_s / decode_s, 1),
            "segments": len(transcript.segments), "language": transcript.language,
        }

        # -- sounds -------------------------------------------------------------------------
        sounds = td / "sounds.m4a"
        make_sounds(sounds, args.sound_s, ffmpeg)
        a = settings.audio
        start = time.perf_counter()
        clips = [audio.wav_bytes(w.samples, audio.CLAP_RATE)
                 for w in audio.windows(sounds, ffmpeg, audio.CLAP_RATE, a.window_s, a.hop_s, a.block_s, a.silence_db)]
        decode_s = time.perf_counter() - start
        clap_dir = build_tiny_clap(str(td / "clap"), full_size=True)
        clap = InfinityClap("clap-htsat-unfused (random weights)", clap_dir,
                            Settings(data_dir=td / "data", index={"embed_batch_size": args.batch}))
        embed_s = time_batches(clap.embed_audios, clips, args.batch)
        clap.close()
        out["sounds"] = {
            "model": "CLAP HTSAT-unfused architecture, random weights, fp32 CPU", "batch": args.batch,
            "window_s": a.window_s, "hop_s": a.hop_s, "audio_s": args.sound_s, "windows": len(clips),
            "embed_seconds": round(embed_s, 2), "windows_per_s": round(len(clips) / embed_s, 2),
            "decode_seconds": round(decode_s, 2), "decode_windows_per_s": round(len(clips) / decode_s, 1),
            "audio_s_per_s_end_to_end": round(args.sound_s / (embed_s + decode_s), 2),
        }

    sp, so = out["speech"], out["sounds"]
    report(out, [
        ("speech: audio s per s (whisper base)", sp['audio_s_per_s']),
        ("speech: decode only, audio s per s", sp['decode_only_audio_s_per_s']),
        ("sounds: CLAP windows per s", so['windows_per_s']),
        ("sounds: decode only, windows per s", so['decode_windows_per_s']),
        ("sounds: audio s per s, decode+embed", so['audio_s_per_s_end_to_end']),
    ], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
