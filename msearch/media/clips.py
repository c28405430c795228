"""Short browser-playable cuts of a recording, for sources a browser cannot play (AVI, WMV,
cinepak, ...): VP9/Opus in WebM (every Chromium and Firefox plays it) or H.264/AAC in MP4.

A cut is made once per content, span and format and kept in a cache folder that holds at most
``keep`` cuts (the least recently used go first).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from pathlib import Path

from msearch.errors import BadInput

FORMATS = {
    "webm": ("video/webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M",
                            "-row-mt", "1", "-c:a", "libopus", "-b:a", "96k"]),
    "mp4": ("video/mp4", ["-c:v", "libx264", "-preset", "veryfast", "-crf", "26", "-pix_fmt", "yuv420p",
                          "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart"]),
}


def clip_path(cache: Path, content_hash: str, start_s: float, end_s: float, fmt: str) -> Path:
    key = hashlib.blake2b(f"{content_hash}:{start_s:.3f}:{end_s:.3f}:{fmt}".encode(), digest_size=12).hexdigest()
    return cache / f"{key}.{fmt}"


def make_clip(source: Path, out: Path, start_s: float, end_s: float, fmt: str, binary: str, *,
              audio_only: bool = False, max_height: int = 720, timeout_s: float = 300.0) -> Path:
    """Cut ``[start_s, end_s)`` of ``source`` to ``out`` (made atomically; reused when there)."""
    if fmt not in FORMATS:
        raise BadInput(f"clip format must be one of {sorted(FORMATS)}")
    try:
        os.utime(out)  # there already: recently used
        return out
    except FileNotFoundError:
        pass
    out.parent.mkdir(parents=True, exist_ok=True)
    codecs = FORMATS[fmt][1]
    if audio_only:
        codecs = [c for c in codecs if c not in ("-movflags", "+faststart")]
        video_at = codecs.index("-c:a")
        codecs = ["-vn", *codecs[video_at:]] + (["-movflags", "+faststart"] if fmt == "mp4" else [])
    scale = [] if audio_only else ["-vf", f"scale=-2:'min({max_height},ih)'"]
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")  # requests cutting the same clip at once
    cmd = [binary, "-nostdin", "-hide_banner", "-loglevel", "error", "-ss", f"{start_s:.3f}", "-i", str(source),
           "-t", f"{end_s - start_s:.3f}", *scale, *codecs, "-f", fmt, "-y", str(tmp)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        tmp.unlink(missing_ok=True)
        raise BadInput(f"cutting the clip took over {timeout_s:.0f} s") from e
    if done.returncode != 0 or not tmp.exists() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        raise BadInput(f"FFmpeg could not cut this clip: {(done.stderr or '').strip()[-300:] or 'no output'}")
    tmp.replace(out)
    return out


def trim_cache(cache: Path, keep: int) -> None:
    """Keep the ``keep`` most recently used cuts."""
    try:
        cuts = sorted((p for p in cache.iterdir() if p.suffix in (".webm", ".mp4")),
                      key=lambda p: p.stat().st_mtime, reverse=True)
    except FileNotFoundError:
        return
    for old in cuts[keep:]:
        old.unlink(missing_ok=True)
