"""Forgetting: contents whose points, units and thumbnails go, and files that left the disk.

A content (by hash) is shared by every path that holds the same bytes; its points go only once
no file refers to it and no run is embedding it.
"""

from __future__ import annotations

import logging

from msearch.library.runs import RunLedger
from msearch.library.thumbs import Thumbnails
from msearch.store.catalog import Catalog
from msearch.store.vectors import VectorStore, file_fields

log = logging.getLogger(__name__)


class Contents:
    def __init__(self, catalog: Catalog, vectors: VectorStore, thumbs: Thumbnails, ledger: RunLedger):
        self.catalog, self.vectors, self.thumbs, self.ledger = catalog, vectors, thumbs, ledger

    def drop(self, hashes: list[str]) -> None:
        """Delete these contents' points, units and thumbnails (all of them, at once)."""
        hashes = [h for h in dict.fromkeys(hashes) if h]
        if not hashes:
            return
        self.thumbs.delete(self.catalog.thumbnails_of(hashes))
        self.vectors.delete_contents(hashes)
        self.catalog.delete_units(hashes)

    def collect(self, hashes: list[str]) -> None:
        """Drop those of ``hashes`` that no file holds and no run is embedding; the file fields
        of those still held change (a file holding them went)."""
        hashes = [h for h in dict.fromkeys(hashes) if h and h not in self.ledger.inflight]
        in_use = self.catalog.hashes_in_use(hashes)
        self.drop([h for h in hashes if h not in in_use])
        self.restamp([h for h in hashes if h in in_use])

    def restamp(self, hashes: list[str]) -> None:
        """Set the file fields of these contents' points (the folders, times and size of the
        indexed files holding each, its duration) from the catalog: what search filters read."""
        hashes = [h for h in dict.fromkeys(hashes) if h]
        if not hashes:
            return
        files: dict[str, list[dict]] = {}
        for f in self.catalog.files_with_hashes(hashes, "indexed"):
            files.setdefault(f["content_hash"], []).append(f)
        self.vectors.set_file_fields({h: file_fields(fs, duration_of(fs)) for h, fs in files.items()})

    def forget(self, paths: list[str]) -> list[str]:
        """Remove these files from the index: their catalog rows, and their contents once no other
        file holds the same content. Returns the paths removed."""
        rows = self.catalog.delete_files(list(paths))
        self.collect([r["content_hash"] for r in rows])
        self.vectors.flush()
        return sorted(r["path"] for r in rows)

    def reconcile(self, roots: list[str], entries: list[dict]) -> list[str]:
        """Forget the files under ``roots`` that the catalog has and the disk no longer has
        (``entries``: what a walk of the roots found; the files of folders it could not list
        are kept as they are)."""
        seen = {e["path"] for e in entries}
        kept = tuple(e["path"].rstrip("/") + "/" for e in entries if e.get("unlisted"))
        gone = [p for p in self.catalog.paths_under(list(roots)) if p not in seen and not p.startswith(kept)]
        return self.forget(gone) if gone else []


def duration_of(files: list[dict]) -> float | None:
    """A content's duration in seconds, from the media facts of a file holding it."""
    import json

    for f in files:
        media = f.get("media")
        if isinstance(media, str):
            try:
                media = json.loads(media)
            except ValueError:
                media = None
        if isinstance(media, dict) and media.get("duration_s"):
            return float(media["duration_s"])
    return None
