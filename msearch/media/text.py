"""Text documents: decode with a detected encoding, then cut into overlapping chunks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from msearch.errors import BadInput

# Where a chunk may end, best first: paragraph, line, sentence, clause, whitespace.
_BREAKS = (
    re.compile(r"\n\s*\n"),
    re.compile(r"\n"),
    re.compile(r"(?<=[.!?。！？；;])\s*"),
    re.compile(r"(?<=[,，、：:])\s*"),
    re.compile(r"\s+"),
)


@dataclass(frozen=True)
class Chunk:
    start: int  # character offsets into the decoded text
    end: int
    text: str


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode document bytes; returns (text, encoding). GBK and friends are detected."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "utf-16"
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace"), "utf-8-sig"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise BadInput("not text: no character encoding fits its bytes")
    encoding = best.encoding
    # charset-normalizer names simplified Chinese "gb18030" (a superset of GBK): fine.
    return data.decode(encoding, errors="replace"), encoding


def check_size(path: Path, max_bytes: int) -> None:
    size = path.stat().st_size
    if size > max_bytes:
        raise BadInput(f"text file of {size} bytes is over the limit of {max_bytes} (MSEARCH_TEXT__MAX_BYTES)")


def read_text(path: Path, max_bytes: int) -> tuple[str, str]:
    check_size(path, max_bytes)
    return decode_text(path.read_bytes())


def chunk_text(text: str, size: int, overlap: int) -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``size`` characters that overlap by about ``overlap``.

    Chunks end at the best natural break in their second half; offsets point into ``text``,
    and leading/trailing whitespace is trimmed from each chunk (offsets follow the trim).
    """
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError("chunk size must be positive and overlap smaller than it")
    chunks: list[Chunk] = []
    n = len(text)
    start = 0
    while start < n:
        end = min(n, start + size)
        if end < n:
            end = _best_break(text, start + size // 2, end)
        chunk = _trimmed(text, start, end)
        if chunk is not None:
            chunks.append(chunk)
        if end >= n:
            break
        nxt = max(end - overlap, start + 1)
        if overlap:
            # Start the overlap on a word/sentence boundary where one is near.
            m = _BREAKS[-1].search(text, nxt, end)
            if m and m.end() < end:
                nxt = m.end()
        start = nxt
    return chunks


def _best_break(text: str, lo: int, hi: int) -> int:
    for pattern in _BREAKS:
        last = None
        for m in pattern.finditer(text, lo, hi):
            last = m
        if last is not None and last.end() > lo:
            return last.end()
    return hi


def _trimmed(text: str, start: int, end: int) -> Chunk | None:
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return None
    lead = len(piece) - len(piece.lstrip())
    return Chunk(start + lead, start + lead + len(stripped), stripped)
