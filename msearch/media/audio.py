"""Audio: probe, and FFmpeg decoding to mono PCM at a model's rate, streamed in blocks.

Audio files and video soundtracks go through the same code. Memory holds one block (and one
window) at a time, so a two-hour recording is never whole in memory.
"""

from __future__ import annotations

import io
import math
import re
import subprocess
import tempfile
import threading
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from msearch.errors import BadInput
from msearch.media.video import _reason, header_seconds, read_header

_STREAM = re.compile(r"Stream #\d+:\d+.*?: Audio: (\w+)[^\n]*?, (\d+) Hz, ([^,\n]+)")
CLAP_RATE = 48_000
WHISPER_RATE = 16_000


@dataclass(frozen=True)
class AudioInfo:
    duration: float  # from the container header; 0.0 when it does not say
    codec: str
    sample_rate: int
    channels: str  # FFmpeg's layout name: mono, stereo, 5.1, ...

    def as_dict(self) -> dict:
        return {"duration_s": self.duration, "audio_codec": self.codec, "sample_rate": self.sample_rate,
                "channels": self.channels}


@dataclass(frozen=True)
class Window:
    start_s: float
    end_s: float
    samples: np.ndarray  # int16 mono at the decode rate


def probe(path: Path, ffmpeg: str) -> AudioInfo | None:
    """The first audio stream's facts, None when the file has no audio stream."""
    text = read_header(path, ffmpeg)
    stream = _STREAM.search(text)
    if stream is None:
        if "Stream #" in text:
            return None
        raise BadInput(f"ffmpeg cannot read it: {_reason(text)}")
    return AudioInfo(header_seconds(text), stream[1], int(stream[2]), stream[3].strip())


def pcm_blocks(path: Path, ffmpeg: str, rate: int, block_s: float, dtype: str = "int16",
               limit_s: float | None = None, report: dict | None = None) -> Iterator[np.ndarray]:
    """Mono samples of the first audio stream at ``rate``, ``block_s`` seconds per block.

    ``dtype`` int16 or float32 (-1..1). Raises :class:`BadInput` with FFmpeg's words when the
    decode fails; a stream that decodes to nothing yields nothing. ``report`` gets the seconds
    decoded (``decoded_s``) and FFmpeg's complaints while decoding (``errors``, or None).
    """
    fmt, width = ("s16le", 2) if dtype == "int16" else ("f32le", 4)
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-i", str(path),
           "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(rate)]
    if limit_s:
        cmd += ["-t", f"{limit_s:.3f}"]
    cmd += ["-f", fmt, "pipe:"]
    block = max(1, int(block_s * rate)) * width
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tail: list[str] = []
    drain = threading.Thread(target=_drain, args=(proc.stderr, tail), daemon=True)
    drain.start()
    samples = 0
    try:
        while True:
            data = proc.stdout.read(block)
            usable = len(data) - len(data) % width
            if usable:
                samples += usable // width
                yield np.frombuffer(data[:usable], dtype=np.int16 if width == 2 else np.float32)
            if len(data) < block:
                break
    finally:
        proc.stdout.close()
        if not _exited(proc):
            proc.kill()
        code = proc.wait()
        drain.join(timeout=10)
    if code != 0:
        raise BadInput(f"ffmpeg cannot decode the audio: {_reason(chr(10).join(tail))}")
    if report is not None:
        from msearch.media.video import decode_errors

        report.update(decoded_s=samples / rate, errors=decode_errors(tail))


def _exited(proc: subprocess.Popen, wait_s: float = 10.0) -> bool:
    """Give FFmpeg a moment to exit on its own once its output is read (or the pipe closed)."""
    try:
        proc.wait(timeout=wait_s)
        return True
    except subprocess.TimeoutExpired:
        return False


def _drain(stream, tail: list[str]) -> None:
    for raw in stream:
        tail.append(raw.decode("utf-8", "replace").rstrip())
        del tail[:-50]


def rms_db(samples: np.ndarray) -> float:
    """Loudness in dBFS (0 is full scale); -inf for digital silence."""
    if samples.size == 0:
        return -math.inf
    x = samples.astype(np.float32)
    if samples.dtype == np.int16:
        x /= 32768.0
    rms = float(np.sqrt(np.mean(x * x)))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def windows(path: Path, ffmpeg: str, rate: int, window_s: float, hop_s: float, block_s: float,
            silence_db: float, report: dict | None = None) -> Iterator[Window]:
    """Overlapping windows over the whole stream; silent ones are left out (``report``: see
    :func:`pcm_blocks`).

    Audio after the last full window (at least a second of it) gets one shorter window, so the
    tail is covered; a stream shorter than one window gives one shorter window.
    """
    win, hop = int(window_s * rate), int(min(hop_s, window_s) * rate)
    buf = np.zeros(0, np.int16)
    offset = 0  # stream position of buf[0], in samples
    last_end = 0  # end of the last window cut
    for block in pcm_blocks(path, ffmpeg, rate, block_s, report=report):
        buf = np.concatenate([buf, block])
        while len(buf) >= win:
            window = Window(offset / rate, (offset + win) / rate, buf[:win].copy())
            last_end = offset + win
            if rms_db(window.samples) >= silence_db:
                yield window
            buf = buf[hop:]
            offset += hop
    total = offset + len(buf)
    if total == 0 or (last_end and total - last_end < min(rate, win // 4)):
        return
    if rms_db(buf) >= silence_db:
        yield Window(offset / rate, total / rate, buf.copy())


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """A mono 16-bit WAV file in memory (what infinity's audio input reads)."""
    if samples.dtype != np.int16:
        samples = (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return out.getvalue()


def query_clip(data: bytes, ffmpeg: str, rate: int, window_s: float) -> np.ndarray:
    """The first window of an uploaded sound, as int16 samples at ``rate``."""
    if not data:
        raise BadInput("the uploaded sound is empty")
    with tempfile.NamedTemporaryFile(suffix=".upload") as f:
        f.write(data)
        f.flush()
        info = probe(Path(f.name), ffmpeg)
        if info is None:
            raise BadInput("the upload has no audio stream")
        blocks = list(pcm_blocks(Path(f.name), ffmpeg, rate, window_s, limit_s=window_s))
    samples = np.concatenate(blocks) if blocks else np.zeros(0, np.int16)
    if samples.size < rate // 10:
        raise BadInput("the uploaded sound has less than 0.1 s of audio")
    return samples
