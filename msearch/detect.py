"""What a file is, from its first bytes. The suffix is only a hint for text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HEAD_BYTES = 8192

# Kinds a search result can have (the file's modality).
KINDS = ("text", "image", "video", "audio", "page")

_FTYP_IMAGE = {b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
_FTYP_AUDIO = {b"M4A ", b"M4B ", b"M4P ", b"F4A "}


@dataclass(frozen=True)
class Detected:
    kind: str | None  # one of KINDS, or None when unrecognised
    format: str  # e.g. "jpeg", "utf-8 text", "pdf"


def sniff(head: bytes, suffix: str = "", text_suffixes: tuple[str, ...] = ()) -> Detected:
    """Classify content by its magic bytes; ``suffix`` only breaks ties for text."""
    if not head:
        return Detected(None, "empty")
    if head.startswith(b"\xff\xd8\xff"):
        return Detected("image", "jpeg")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Detected("image", "png")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Detected("image", "gif")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Detected("image", "webp")
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return Detected("audio", "wav")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Detected("video", "avi")
    if head[:2] == b"BM" and len(head) > 14 and head[6:10] == b"\x00\x00\x00\x00":
        return Detected("image", "bmp")
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return Detected("image", "tiff")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _FTYP_IMAGE:
            return Detected("image", brand.decode("latin-1").strip())
        if brand in _FTYP_AUDIO:
            return Detected("audio", "m4a")
        return Detected("video", "mp4")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return Detected("video", "matroska")
    if head.startswith(b"FLV\x01"):
        return Detected("video", "flv")
    if head.startswith(b"\x00\x00\x01\xba"):
        return Detected("video", "mpeg-ps")
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return Detected("video", "mpeg-ts")
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return Detected("video", "asf")
    if head.startswith(b"%PDF-"):
        return Detected("page", "pdf")
    if head.startswith(b"PK\x03\x04"):
        from msearch.media.document import office_format

        fmt = office_format(head)
        return Detected("text", fmt) if fmt else Detected(None, "zip archive")
    if head.startswith(b"fLaC"):
        return Detected("audio", "flac")
    if head.startswith(b"OggS"):
        return Detected("audio", "ogg")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 BOM (before MPEG sync, which it resembles)
        return Detected("text", "utf-16 text")
    if head.startswith(b"ID3") or (head[0] == 0xFF and (head[1] & 0xE0) == 0xE0 and not _looks_textual(head)):
        return Detected("audio", "mp3")
    encoding = text_encoding(head, suffix.lower() in text_suffixes)
    if encoding:
        return Detected("text", f"{encoding} text")
    return Detected(None, "unrecognised binary")


def _looks_textual(head: bytes) -> bool:
    return b"\x00" not in head[:512]


def text_encoding(head: bytes, suffix_says_text: bool) -> str | None:
    """Best guess of a text encoding for ``head``, or None when it is not text."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if b"\x00" in head:
        return None
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as e:
        # A multi-byte character cut by the head's end is still UTF-8.
        if e.start >= len(head) - 3 and e.reason.startswith("unexpected end"):
            return "utf-8"
    from charset_normalizer import from_bytes

    best = from_bytes(head).best()
    if best is None:
        return None
    # Random bytes decode as *something*; demand low chaos unless the suffix says text.
    if best.chaos > (0.3 if suffix_says_text else 0.1):
        return None
    return best.encoding


def sniff_file(path: Path, text_suffixes: tuple[str, ...] = ()) -> Detected:
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    return sniff(head, path.suffix, text_suffixes)
