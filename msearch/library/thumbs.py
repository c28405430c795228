"""Thumbnails: JPEGs by opaque id (never paths), kept in the catalog's ``thumbs`` table.

Many small files cost the store owner a file creation each (about a millisecond here, more than
all the rest of a picture's bookkeeping); one bulk insert per write batch costs little. Data dirs
written before kept them as files under ``data_dir/thumbs``: those are still read and removed.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from msearch.errors import NotFound
from msearch.store.catalog import Catalog

_THUMB_ID = re.compile(r"^[0-9a-f]{32}$")


def thumb_id_for(content_hash: str, unit: int | str) -> str:
    return hashlib.blake2b(f"{content_hash}:{unit}".encode(), digest_size=16).hexdigest()


class Thumbnails:
    def __init__(self, catalog: Catalog, legacy_root: Path):
        self.catalog = catalog
        self.legacy_root = Path(legacy_root)  # thumbnails as files, from older data dirs

    def _legacy(self, thumb_id: str) -> Path:
        return self.legacy_root / thumb_id[:2] / f"{thumb_id}.jpg"

    def save(self, thumbs: dict[str, bytes]) -> None:
        self.catalog.put_thumbnails(thumbs)

    def read(self, thumb_id: str) -> bytes:
        if not _THUMB_ID.match(thumb_id or ""):
            raise NotFound("no such thumbnail")
        data = self.catalog.thumbnail(thumb_id)
        if data is None:
            legacy = self._legacy(thumb_id)
            if not legacy.is_file():
                raise NotFound("no such thumbnail")
            data = legacy.read_bytes()
        return data

    def delete(self, thumb_ids: list[str]) -> None:
        self.catalog.delete_thumbnails(thumb_ids)
        if self.legacy_root.is_dir():
            for thumb_id in thumb_ids:
                self._legacy(thumb_id).unlink(missing_ok=True)

    def clear(self) -> None:
        self.catalog.clear_thumbnails()
        shutil.rmtree(self.legacy_root, ignore_errors=True)
