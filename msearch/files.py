"""Listing and hashing files."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

from msearch.detect import HEAD_BYTES, sniff
from msearch.errors import ConfigError

log = logging.getLogger(__name__)

CHUNK = 1 << 20


def check_roots(roots: Iterable[str | Path]) -> list[Path]:
    out = []
    for root in roots:
        path = Path(root).expanduser().resolve()
        if not path.exists():
            raise ConfigError(f"{root}: no such file or folder")
        out.append(path)
    if not out:
        raise ConfigError("no folder to index was given")
    return out


def walk(roots: Iterable[Path], *, include_hidden: bool = False, follow_symlinks: bool = False,
         exclude: Iterable[Path] = ()) -> Iterator[dict]:
    """Yield ``{path, size, mtime}`` for every regular file under ``roots`` (sorted, no repeats)."""
    excluded = [Path(e).resolve() for e in exclude]
    seen: set[str] = set()
    for root in roots:
        if root.is_file():
            entries = [root]
        else:
            entries = _walk_dir(root, include_hidden, follow_symlinks, excluded)
        for path in entries:
            if isinstance(path, Unlisted):
                yield {"path": _shown(str(path.path)), "size": None, "mtime": None, "unlisted": True,
                       "error": f"cannot list this folder ({path.reason}); the files indexed from it keep "
                                "their entries until it can be read again"}
                continue
            key = str(path)
            if key in seen:
                continue
            seen.add(key)
            try:
                st = path.stat() if follow_symlinks else path.lstat()
            except OSError as e:
                log.warning("cannot stat %s: %s", path, e)
                continue
            if not _is_regular(st):
                continue
            entry = {"path": _shown(key), "size": st.st_size, "mtime": st.st_mtime}
            if entry["path"] != key:  # bytes that are not UTF-8 in the name: keep it, shown escaped
                entry["error"] = BAD_NAME
            yield entry


def _shown(path: str) -> str:
    """``path`` as text: bytes of a name that are not UTF-8 are shown as \\x escapes."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")


class Unlisted:
    """A folder ``os.walk`` could not list (permissions, I/O error)."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason


def _is_regular(st) -> bool:
    import stat

    return stat.S_ISREG(st.st_mode)


def _walk_dir(root: Path, include_hidden: bool, follow_symlinks: bool,
              excluded: list[Path]) -> Iterator[Path | Unlisted]:
    unlisted: list[Unlisted] = []

    def onerror(e: OSError) -> None:
        log.warning("cannot list %s: %s", e.filename, e.strerror)
        unlisted.append(Unlisted(e.filename, e.strerror or str(e)))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=follow_symlinks):
        yield from unlisted
        unlisted.clear()
        here = Path(dirpath)
        dirnames[:] = sorted(
            d for d in dirnames
            if (include_hidden or not d.startswith(".")) and not any(here / d == e for e in excluded)
        )
        for name in sorted(filenames):
            if include_hidden or not name.startswith("."):
                path = here / name
                if follow_symlinks or not path.is_symlink():
                    yield path
    yield from unlisted


BAD_NAME = "the file name is not valid UTF-8 (shown here with \\x escapes); rename the file to index it"


def hash_entry(entry: dict, text_suffixes: tuple[str, ...]) -> dict:
    """:func:`hash_and_sniff` for a listed file, or the reason it cannot be read at all."""
    if entry.get("error"):
        return {"path": entry["path"], "size": entry.get("size"), "mtime": entry.get("mtime"),
                "error": entry["error"]}
    return hash_and_sniff(entry["path"], text_suffixes)


def hash_and_sniff(path: str, text_suffixes: tuple[str, ...]) -> dict:
    """Content hash (BLAKE2b-128) and detected kind of one file; errors are returned, not raised."""
    p = Path(path)
    try:
        before = p.stat()
        h = hashlib.blake2b(digest_size=16)
        head = b""
        with open(p, "rb") as f:
            while chunk := f.read(CHUNK):
                if len(head) < HEAD_BYTES:
                    head += chunk[: HEAD_BYTES - len(head)]
                h.update(chunk)
        after = p.stat()
    except OSError as e:
        return {"path": path, "error": f"cannot read: {e.strerror or e}"}
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        return {"path": path, "error": "the file changed while it was read; it will be retried"}
    detected = sniff(head, p.suffix, text_suffixes)
    if detected.format == "empty":
        return {"path": path, "size": after.st_size, "mtime": after.st_mtime, "content_hash": h.hexdigest(),
                "kind": None, "format": "empty", "error": None}
    return {
        "path": path, "size": after.st_size, "mtime": after.st_mtime, "content_hash": h.hexdigest(),
        "kind": detected.kind, "format": detected.format, "error": None,
    }
