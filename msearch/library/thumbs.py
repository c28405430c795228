"""Thumbnails: JPEG files under ``data_dir/thumbs``, named by opaque ids (never paths)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

from msearch.errors import NotFound

_THUMB_ID = re.compile(r"^[0-9a-f]{32}$")


def thumb_id_for(content_hash: str, unit: int | str) -> str:
    return hashlib.blake2b(f"{content_hash}:{unit}".encode(), digest_size=16).hexdigest()


class Thumbnails:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._dirs: set[Path] = set()  # folders known to exist

    def path(self, thumb_id: str) -> Path:
        return self.root / thumb_id[:2] / f"{thumb_id}.jpg"

    def save(self, thumb_id: str, data: bytes) -> None:
        path = self.path(thumb_id)
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def read(self, thumb_id: str) -> bytes:
        if not _THUMB_ID.match(thumb_id or ""):
            raise NotFound("no such thumbnail")
        path = self.path(thumb_id)
        if not path.is_file():
            raise NotFound("no such thumbnail")
        return path.read_bytes()

    def delete(self, thumb_ids) -> None:
        for thumb_id in thumb_ids:
            self.path(thumb_id).unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self._dirs.clear()
