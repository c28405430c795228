"""Speech to timed text with faster-whisper.

Audio is decoded by FFmpeg to 16 kHz mono and transcribed a block at a time; each block ends
at the quietest moment near its end, so a word is not cut in two, and timestamps are shifted
by the block's start. The language is detected on the first block that holds speech and kept
for the rest of the file.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from msearch.errors import MissingDependency, ModelUnavailable
from msearch.media import audio

log = logging.getLogger(__name__)
RATE = audio.WHISPER_RATE
CUT_SEARCH_S = 20.0  # where a block may end: the quietest 0.5 s within its last 20 s
MAX_SEGMENT_CHARS = 2000


@dataclass
class Segment:
    start_s: float
    end_s: float
    text: str


@dataclass
class Transcript:
    language: str | None = None
    language_probability: float | None = None
    duration_s: float = 0.0
    seconds: float = 0.0  # time spent transcribing
    segments: list[Segment] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Transcript":
        segments = [Segment(**s) for s in d.get("segments", [])]
        return cls(**{**d, "segments": segments})


def quiet_cut(samples: np.ndarray, search_s: float = CUT_SEARCH_S, frame_s: float = 0.5) -> int:
    """Index at the middle of the quietest ``frame_s`` within the last ``search_s`` seconds."""
    frame = int(frame_s * RATE)
    lo = max(0, len(samples) - int(search_s * RATE))
    tail = samples[lo:]
    n = len(tail) // frame
    if n < 2:
        return len(samples)
    energy = (tail[: n * frame].astype(np.float32) ** 2).reshape(n, frame).mean(axis=1)
    return lo + int(np.argmin(energy)) * frame + frame // 2


class Transcriber:
    """One loaded faster-whisper model; ``transcribe(path)`` streams a file through it."""

    def __init__(self, model_path: str, settings, model_id: str | None = None, cpu_threads: int = 0):
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise MissingDependency("faster-whisper is not installed: pip install faster-whisper") from e
        from msearch.embed.infinity import resolve_device

        self.settings = settings.speech
        self.model_id = model_id or model_path
        device = resolve_device(settings.device)
        compute = self.settings.compute_type
        if compute == "auto":
            compute = "float16" if device == "cuda" else "int8"
        threads = self.settings.cpu_threads or cpu_threads
        try:
            self.model = WhisperModel(model_path, device=device, compute_type=compute, cpu_threads=threads)
        except Exception as e:  # missing or corrupt model.bin, unknown compute type, ...
            raise ModelUnavailable("whisper", self.model_id, "MSEARCH_MODELS__WHISPER", f"cannot load it: {e}") from e
        log.info("loaded whisper model %s on %s (%s, %d threads)", self.model_id, device, compute, threads)

    def transcribe(self, path: Path, ffmpeg: str) -> Transcript:
        start = time.perf_counter()
        out = Transcript(language=self.settings.language)
        pending = np.zeros(0, np.float32)
        offset = 0  # stream position of pending[0], in samples
        block_s = self.settings.block_s
        for block in audio.pcm_blocks(path, ffmpeg, RATE, block_s, dtype="float32"):
            pending = np.concatenate([pending, block])
            if len(pending) < block_s * RATE:
                continue
            cut = quiet_cut(pending)
            self._run(pending[:cut], offset, out)
            pending, offset = pending[cut:], offset + cut
        if len(pending):
            self._run(pending, offset, out)
        out.duration_s = round((offset + len(pending)) / RATE, 3)
        out.seconds = round(time.perf_counter() - start, 3)
        return out

    def _run(self, samples: np.ndarray, offset: int, out: Transcript) -> None:
        if len(samples) < RATE // 10:
            return
        s = self.settings
        segments, info = self.model.transcribe(
            samples, language=out.language, beam_size=s.beam_size, vad_filter=s.vad,
            condition_on_previous_text=False,
        )
        base, end = offset / RATE, (offset + len(samples)) / RATE
        found = False
        for seg in segments:
            text = seg.text.strip()
            if not text:
                continue
            found = True
            out.segments.append(Segment(round(base + max(0.0, seg.start), 3),
                                        round(min(end, base + seg.end), 3), text[:MAX_SEGMENT_CHARS]))
        if found and out.language is None:
            out.language = info.language
            prob = info.language_probability
            out.language_probability = round(float(prob), 3) if prob is not None and math.isfinite(prob) else None
