"""Writing and settling: embedded units become points, unit rows and thumbnails; a file is
settled (``indexed``, ``failed`` or ``skipped``) once all its content's units are stored and the
vector store has made them durable (one flush at most every second, not one per batch).

A content's units may arrive over several batches and in any order; the last chunk of its
decode carries the unit count. Everything a batch needs is written in a few bulk statements.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict

from msearch.library.contents import Contents
from msearch.library.runs import RunLedger
from msearch.library.thumbs import Thumbnails, thumb_id_for
from msearch.store.catalog import Catalog
from msearch.store.vectors import PointData, VectorStore, file_fields, point_id

log = logging.getLogger(__name__)

SNIPPET_CHARS = 300
COMMIT_EVERY_S = 1.0  # flush the vector store (and settle what it completes) at most this often
COMMIT_SHARE = 0.05  # ... and no more often than keeps commits to this share of the owner's time
UPSERT_POINTS = 128  # points per call of the vector store: the engine holds the interpreter ~0.1 ms a point,
# and a search in the owner waits for the call it arrives in


def to_points(units: list[dict], fields: dict[str, dict] | None = None
              ) -> tuple[dict[str, list[PointData]], list[dict], dict[str, bytes]]:
    """Embedded unit rows as points per space, catalog unit rows, and thumbnails (id -> JPEG).

    Units of one picture, page or scene share its thumbnail (``thumb_key``). ``fields``: the file
    fields of each content (hash -> :func:`~msearch.store.vectors.file_fields`), for the payload.
    """
    points: dict[str, list[PointData]] = defaultdict(list)
    rows, thumbs = [], {}
    for u in units:
        space, model = u["space"], u["model"]
        thumb = None
        if u.get("thumbnail"):
            thumb = thumb_id_for(u["content_hash"], u.get("thumb_key") or u["unit"])
            thumbs[thumb] = u["thumbnail"]
        pid = point_id(u["content_hash"], u["unit"], space, model)
        text = u.get("text")
        payload = {
            "content_hash": u["content_hash"], "kind": u["kind"], "unit": int(u["unit"]), "space": space,
            "start_s": u.get("start_s"), "end_s": u.get("end_s"), "page": u.get("page"),
            "text": text[:SNIPPET_CHARS] if text else None, "thumbnail": thumb,
            **(fields or {}).get(u["content_hash"], {}),
        }
        if u.get("vector") is not None:
            sparse = None
            if u.get("sparse_indices") is not None:
                sparse = (list(u["sparse_indices"]), list(u["sparse_values"]))
            points[space].append(PointData(pid, payload, list(u["vector"]), sparse, u.get("multi")))
        rows.append({**payload, "text": text, "char_start": u.get("char_start"), "char_end": u.get("char_end"),
                     "point_id": pid, "model": model})
    return dict(points), rows, thumbs


class Writer:
    def __init__(self, catalog: Catalog, vectors: VectorStore, thumbs: Thumbnails, ledger: RunLedger,
                 contents: Contents, check_models, give_way=lambda: None, check_space=lambda need=0: None):
        self.catalog, self.vectors, self.thumbs = catalog, vectors, thumbs
        self.ledger, self.contents, self.check_models = ledger, contents, check_models
        self.give_way = give_way  # called between steps: lets a search in the same process go first
        self.check_space = check_space  # raises DiskFull before a write the disk cannot take
        self._complete: dict[str, tuple[str, dict]] = {}  # content -> (run, outcome): written, not yet flushed
        self._committed_at = time.monotonic()
        self._commit_s = 0.0  # what the last commit took
        self._stored: set[str] = set()  # contents whose points a write task stored (no file fields)

    def write(self, units: list[dict], stored: bool = False) -> int:
        """Store embedded units (and decode or embedding failures); settle the contents that are
        complete. ``stored``: the units' points are already in the vector store (a write task
        upserted them to a Qdrant server); only their rows and thumbnails are recorded here.
        Returns how many contents were settled."""
        runs: dict[str, str] = {}
        failures: dict[str, str] = {}
        skips: dict[str, str] = {}
        keep, stray = [], []
        for u in units:
            h = u["content_hash"]
            if h not in self.ledger.inflight:
                log.debug("ignoring a unit of %s, which is no longer being indexed", u["path"])
                stray.append(u)
                continue
            runs[h] = u["run_id"]
            for key in ("decode", "embed"):
                self.ledger.add_seconds(u["run_id"], key, float(u.get(f"{key}_s") or 0.0))
            if u.get("n_units") is not None:
                self.ledger.expected[h] = int(u["n_units"])
            if u.get("media"):
                self.ledger.media[h] = u["media"]
            if u.get("error"):
                failures[h] = u["error"]
            elif not u.get("space"):
                skips[h] = u.get("note") or "nothing to index in this file"
            else:
                keep.append(u)
                for key in ("decode_s", "embed_s"):
                    self.ledger.timings[h][key] += float(u.get(key) or 0.0)
        if stored and stray:  # points a write task stored for a content no longer indexed
            self.vectors.delete_points(_point_ids(stray))
        keep = [u for u in keep if u["content_hash"] not in failures]
        if stored:
            self._stored.update(u["content_hash"] for u in keep)
        hashes = {u["content_hash"] for u in keep}
        points, rows, thumbs = to_points(keep, {h: file_fields(self.ledger.files.get(h, [])) for h in hashes})
        self.give_way()
        # What this step writes, roughly: thumbnails, texts, vectors (4 bytes a dimension, twice:
        # the store's storage and its write-ahead log).
        self.check_space(sum(len(t) for t in thumbs.values()) + sum(len(r.get("text") or "") for r in rows) +
                         sum(8 * len(p.dense or ()) + 600 for ps in points.values() for p in ps))
        self.check_models({r["space"]: r["model"] for r in rows}, record=True)
        self.thumbs.save(thumbs)
        self.give_way()
        # Unit rows before points: a content with points always has units, so a crash between
        # the two leaves units that the next claim of the content finds and drops.
        self.catalog.add_units(rows)
        for space, space_points in points.items():
            self.vectors.ensure_space(space, len(space_points[0].dense))
            for i in range(0, len(space_points), UPSERT_POINTS):
                self.give_way()
                self.vectors.upsert(space, space_points[i : i + UPSERT_POINTS])
        for space, dim in {u["space"]: u["dim"] for u in keep if u.get("dim")}.items():
            self.vectors.ensure_space(space, dim)  # a space a write task created on the server
        self.give_way()
        counts = self.catalog.unit_counts([h for h in runs if h not in failures and h not in skips])
        outcomes = []
        for h, run_id in runs.items():
            n = self.ledger.expected.get(h)
            if h in failures:
                outcomes.append({"content_hash": h, "status": "failed", "error": failures[h], "units_expected": 0})
            elif h in skips:
                outcomes.append({"content_hash": h, "status": "skipped", "error": skips[h], "units_expected": 0})
            elif n is not None and counts.get(h, 0) >= n:
                self._complete[h] = (run_id, {"content_hash": h, "status": "indexed", "units_expected": n,
                                              "timings": json.dumps(dict(self.ledger.timings[h]))})
        self.contents.drop([o["content_hash"] for o in outcomes if o["status"] == "failed"])
        self._settle(runs, outcomes)
        settled = len(outcomes)
        if self._complete and time.monotonic() - self._committed_at >= max(COMMIT_EVERY_S,
                                                                            self._commit_s / COMMIT_SHARE):
            self.give_way()
            settled += self.commit()
        return settled

    def commit(self) -> int:
        """Make the points written so far durable (one flush of the vector store), then settle
        the contents they complete: a file is ``indexed`` only once its points are on disk.
        Returns how many contents were settled."""
        start = time.monotonic()
        self.vectors.flush()
        done, self._complete = self._complete, {}
        self._settle({h: run for h, (run, _) in done.items()}, [o for _, o in done.values()])
        self._committed_at = time.monotonic()
        self._commit_s = self._committed_at - start
        return len(done)

    def _settle(self, runs: dict[str, str], outcomes: list[dict]) -> None:
        restamp = []  # contents whose points need file fields they were not written with
        for o in outcomes:
            h = o["content_hash"]
            if o["status"] == "indexed" and (h in self.ledger.restamp or h in self._stored or
                                             '"duration_s"' in (self.ledger.media.get(h) or "")):
                restamp.append(h)
            self.ledger.restamp.discard(h)
            self._stored.discard(h)
            o["media"] = self.ledger.release(h)
            o["warning"] = warning_of(o["media"]) if o["status"] == "indexed" else None
        for f in self.catalog.settle(outcomes):
            self.ledger.record(runs[f["content_hash"]], f["status"], f["path"], f["error"])
        self.contents.restamp(restamp)

    def finish(self, run_id: str) -> None:
        """Settle what is complete; fail what a run left half-done (a content whose units did not
        all arrive)."""
        self.commit()
        left = self.ledger.contents_of({run_id})
        if not left:
            return
        have = self.catalog.unit_counts(left)
        self.contents.drop(left)
        self._settle({h: run_id for h in left}, [
            {"content_hash": h, "status": "failed", "units_expected": 0,
             "error": f"indexing did not complete ({have.get(h, 0)} units written)"} for h in left])
        self.vectors.flush()

    def abandon(self, runs: set[str]) -> None:
        """Contents that killed runs were embedding: drop their partial units and free them, so
        that a later run claims them again (their files are still 'pending'). What they
        completed is settled."""
        self.commit()
        left = self.ledger.contents_of(runs)
        for h in left:
            log.info("content %s was left half-indexed by a run that died; it is indexed again", h)
            self.ledger.release(h)
        self.contents.drop(left)


def _point_ids(units: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for u in units:
        if u.get("space") and u.get("model"):
            out[u["space"]].append(point_id(u["content_hash"], u["unit"], u["space"], u["model"]))
    return out


def warning_of(media: str | None) -> str | None:
    """What a file indexed from what could be read of it lost (its media facts' ``warnings``)."""
    if not media:
        return None
    try:
        warnings = json.loads(media).get("warnings")
    except (ValueError, AttributeError):
        return None
    return "; ".join(warnings) if warnings else None
