"""The store owner's logic: catalog + vectors + thumbnails, for one data dir.

Exactly one process holds a :class:`Library` for a data dir (see :mod:`msearch.owner`);
the indexing pipeline and the search replicas reach it through that process. Everything
here is plain Python: Ray only wraps it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from msearch.embed import KIND_ROLES, roles_for_kind
from msearch.errors import BadInput, ConfigError, NotFound
from msearch.settings import Settings
from msearch.store.catalog import Catalog
from msearch.store.vectors import Hit, PointData, SpaceQuery, VectorStore, open_vector_store, point_id

log = logging.getLogger(__name__)

RRF_K = 60
MERGE_MARGIN = 0.03  # cosine similarity: neighbouring scenes (or sound windows) this close merge
MERGE_SPACES = ("clip", "clap")  # spaces whose neighbouring units of a file are merged
TIMED_KINDS = ("video", "audio")
SNIPPET_CHARS = 300
_THUMB_ID = re.compile(r"^[0-9a-f]{32}$")


def file_id_for(path: str) -> str:
    return hashlib.blake2b(path.encode(), digest_size=8).hexdigest()


def thumb_id_for(content_hash: str, unit: int | str) -> str:
    return hashlib.blake2b(f"{content_hash}:{unit}".encode(), digest_size=16).hexdigest()


def thumbnail_url(thumb_id: str | None) -> str | None:
    return f"/api/v1/thumbnails/{thumb_id}" if thumb_id else None


class Library:
    def __init__(self, settings: Settings, vectors: VectorStore | None = None, catalog: Catalog | None = None):
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.catalog = catalog or Catalog(settings.catalog_path)
        self.vectors = vectors or open_vector_store(settings)
        self.thumbs = settings.thumbs_path
        self._lock = threading.RLock()
        self._inflight: dict[str, str] = {}  # content_hash -> run id embedding it
        # Per content in flight: its unit count once decode has finished, media facts, seconds.
        self._expected: dict[str, int] = {}
        self._media: dict[str, str] = {}
        self._timings: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        # run -> stage -> seconds (hash, claim, decode, embed, write), for the run's report
        self._stages: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._runs: dict[str, dict[str, list]] = {}
        self._run_jobs: dict[str, str | None] = {}  # run id -> the Ray job (driver) running it
        # Whether a job's driver still runs (the owner actor answers from Ray; default: yes).
        self.job_alive: Callable[[str], bool] = lambda job_id: True

    def close(self) -> None:
        with self._lock:
            self.vectors.close()
            self.catalog.close()

    def ping(self) -> dict:
        return {"data_dir": str(self.settings.data_dir), "spaces": self.vectors.spaces()}

    # -- models ------------------------------------------------------------------------
    def check_models(self, models: dict[str, str]) -> None:
        """Refuse a model that differs from the one a space was built with."""
        for space, model in models.items():
            stored = self.catalog.get_meta(f"model:{space}")
            if stored and stored != model:
                raise ConfigError(
                    f"this data dir's {space!r} vectors were made with {stored!r}, but the model is now "
                    f"{model!r}; vectors of two models cannot be compared. Use another MSEARCH_DATA_DIR "
                    f"or set the model back."
                )

    # -- indexing: plan, claim, write, finish -------------------------------------------
    def begin_run(self, run_id: str, models: dict[str, str], job_id: str | None = None) -> None:
        self.check_models(models)
        with self._lock:
            self._abandon_dead_runs()
            self._runs[run_id] = defaultdict(list)
            self._run_jobs[run_id] = job_id

    def _abandon_dead_runs(self) -> None:
        """Contents that a killed run was embedding: drop their partial units and free them, so
        that this run claims them again (their files are still 'pending')."""
        dead = {run for run, job in self._run_jobs.items() if job and not self.job_alive(job)}
        for h, run in list(self._inflight.items()):
            if run in dead:
                log.info("content %s was left half-indexed by a run that died; it is indexed again", h)
                self._drop_content(h)
                for d in (self._inflight, self._expected, self._media, self._timings):
                    d.pop(h, None)
        for run in dead:
            self._run_jobs.pop(run, None)
            self._runs.pop(run, None)

    def _outcome(self, run_id: str, outcome: str, path: str, error: str | None = None) -> None:
        run = self._runs.setdefault(run_id, defaultdict(list))
        run[outcome].append({"path": path, "error": error} if error else {"path": path})

    def plan(self, run_id: str, entries: list[dict], models: dict[str, str]) -> list[dict]:
        """Drop files whose size and mtime are unchanged since they were indexed with these models."""
        with self._lock:
            known = self.catalog.files_by_path([e["path"] for e in entries])
            todo = []
            now = time.time()
            for e in entries:
                old = known.get(e["path"])
                same = old and old["size"] == e["size"] and old["mtime"] == e["mtime"]
                if same and old["status"] == "indexed" and _models_of(old) == roles_for_kind(old["kind"], models):
                    self._outcome(run_id, "unchanged", e["path"])
                elif same and old["status"] == "failed" and now < old["updated_at"] + self._backoff(old):
                    wait = old["updated_at"] + self._backoff(old) - now
                    self._outcome(run_id, "failed", e["path"],
                                  f"{old['error']} (tried {old['attempts'] or 1}x; next try in {wait:.0f} s, "
                                  "or at once when the file changes)")
                else:
                    todo.append(e)
            return todo

    @contextmanager
    def _clock(self, runs, stage: str):
        """Add the block's seconds to ``stage`` of ``runs`` (shared evenly), for the run reports."""
        start = time.perf_counter()
        try:
            yield
        finally:
            runs = list(runs)
            for run in runs:
                self._stages[run][stage] += (time.perf_counter() - start) / len(runs)

    def _backoff(self, row: dict) -> float:
        """Seconds before an unchanged file that failed is tried again: doubling per failure."""
        idx = self.settings.index
        return min(idx.retry_backoff_s * 2 ** max(0, (row.get("attempts") or 1) - 1), idx.retry_backoff_max_s)

    def claim(self, run_id: str, rows: list[dict], models: dict[str, str], missing: dict[str, str],
              hash_s: float = 0.0) -> list[dict]:
        # (``models``: available roles; ``missing``: role -> why it is unavailable;
        # ``hash_s``: what hashing these rows took, for the run's stage seconds)
        """Record hashed files; return the ones whose content must be decoded and embedded."""
        with self._lock, self._clock([run_id], "claim"):
            self._stages[run_id]["hash"] += hash_s
            known = self.catalog.files_by_path([r["path"] for r in rows])
            updates, emit = [], []
            leftovers, replaced = [], []  # contents about to be re-embedded; contents a path left
            for r in rows:
                path, h, kind = r["path"], r.get("content_hash"), r.get("kind")
                old = known.get(path)
                row = {
                    "file_id": file_id_for(path), "path": path, "size": r.get("size"), "mtime": r.get("mtime"),
                    "content_hash": h, "kind": kind, "format": r.get("format"), "status": "pending",
                    "models": roles_for_kind(kind, models), "units_expected": None,
                    "attempts": (old.get("attempts") or 0) if old and old["status"] == "failed" else 0,
                }
                if r.get("error"):
                    row.update(status="failed", error=r["error"], attempts=row["attempts"] + 1)
                    if h is None and old:  # unreadable now: keep what it was, in case it comes back
                        row.update(content_hash=old["content_hash"], kind=old["kind"], format=old["format"])
                        h = old["content_hash"]
                elif kind is None:
                    fmt = r.get("format")
                    row.update(status="skipped", error="empty file" if fmt == "empty" else f"unrecognised content ({fmt})")
                elif kind not in KIND_ROLES:
                    row.update(status="skipped", error=f"{kind} files are not indexed by this version of msearch")
                elif not row["models"]:
                    why = [missing[r] for r in KIND_ROLES[kind] if r in missing]
                    row.update(status="skipped", error=" ".join(dict.fromkeys(why)) or f"no model indexes {kind} files")
                elif old and old["content_hash"] == h and old["status"] == "indexed" \
                        and _models_of(old) == row["models"]:
                    row.update(status="indexed", units_expected=old["units_expected"],
                               indexed_at=old["indexed_at"], timings=old["timings"])
                    self._outcome(run_id, "unchanged", path)
                else:
                    done = self._complete_copy(h, row["models"])
                    if done is not None:
                        row.update(status="indexed", units_expected=done["units_expected"],
                                   indexed_at=time.time(), timings=done["timings"])
                        self._outcome(run_id, "indexed", path)
                    elif h in self._inflight:
                        pass  # the same content is being embedded for another path: share it
                    else:
                        self._inflight[h] = run_id
                        leftovers.append(h)  # partial units of an interrupted earlier try
                        emit.append({**r, "run_id": run_id})
                if row["status"] == "indexed":
                    row["attempts"] = 0
                if row["status"] in ("failed", "skipped"):
                    self._outcome(run_id, row["status"], path, row["error"])
                updates.append(row)
                if old and old["content_hash"] and old["content_hash"] != h:
                    replaced.append(old["content_hash"])
            self.catalog.upsert_files(updates)
            for h in leftovers:
                self._drop_content(h)
            for h in replaced:
                self._collect(h)  # only once no other file refers to it
            return emit

    def _complete_copy(self, content_hash: str, models: dict) -> dict | None:
        for f in self.catalog.files_with_hashes([content_hash], "indexed"):
            if _models_of(f) == models:
                return f
        return None

    def write(self, units: list[dict]) -> int:
        """Store embedded units (and decode/embedding failures); settle files that are complete.

        A file's units may arrive over several calls; it is settled once its unit count is
        known (the last chunk of its decode carries it) and that many units are stored.
        """
        with self._lock, self._clock({u["run_id"] for u in units if u.get("run_id")}, "write"):
            runs: dict[str, str] = {}
            failures: dict[str, str] = {}
            skips: dict[str, str] = {}
            by_space: dict[str, list[dict]] = defaultdict(list)
            for u in units:
                h = u["content_hash"]
                if h not in self._inflight:
                    log.debug("ignoring a unit of %s, which is no longer being indexed", u["path"])
                    continue
                runs[h] = u["run_id"]
                for key in ("decode", "embed"):
                    self._stages[u["run_id"]][key] += float(u.get(f"{key}_s") or 0.0)
                if u.get("n_units") is not None:
                    self._expected[h] = int(u["n_units"])
                if u.get("media"):
                    self._media[h] = u["media"]
                if u.get("error"):
                    failures[h] = u["error"]
                elif not u.get("space"):
                    skips[h] = u.get("note") or "nothing to index in this file"
                else:
                    by_space[u["space"]].append(u)
                    for key in ("decode_s", "embed_s"):
                        self._timings[h][key] += float(u.get(key) or 0.0)
            unit_rows = []
            for space, rows in by_space.items():
                rows = [u for u in rows if u["content_hash"] not in failures]
                if not rows:
                    continue
                model = rows[0]["model"]
                self.check_models({space: model})
                self.vectors.ensure_space(space, len(rows[0]["vector"]))
                if self.catalog.get_meta(f"model:{space}") is None:
                    self.catalog.set_meta(f"model:{space}", model)
                points = []
                for u in rows:
                    thumb = None
                    if u.get("thumbnail"):
                        # Units of one picture, page or scene share its thumbnail (thumb_key).
                        thumb = thumb_id_for(u["content_hash"], u.get("thumb_key") or u["unit"])
                        self._save_thumb(thumb, u["thumbnail"])
                    pid = point_id(u["content_hash"], u["unit"], space, model)
                    text = u.get("text")
                    payload = {
                        "content_hash": u["content_hash"], "kind": u["kind"], "unit": int(u["unit"]), "space": space,
                        "start_s": u.get("start_s"), "end_s": u.get("end_s"), "page": u.get("page"),
                        "text": text[:SNIPPET_CHARS] if text else None, "thumbnail": thumb,
                    }
                    sparse = None
                    if u.get("sparse_indices") is not None:
                        sparse = (list(u["sparse_indices"]), list(u["sparse_values"]))
                    points.append(PointData(pid, payload, list(u["vector"]), sparse, u.get("multi")))
                    unit_rows.append({**payload, "text": text, "char_start": u.get("char_start"),
                                      "char_end": u.get("char_end"), "point_id": pid, "model": model})
                self.vectors.upsert(space, points)
            self.catalog.add_units(unit_rows)
            self.vectors.flush()
            counts = self.catalog.unit_counts(list(runs))
            settled = 0
            for h, run_id in runs.items():
                n = self._expected.get(h)
                if h in failures:
                    self._fail_content(run_id, h, failures[h])
                elif h in skips:
                    self._settle(run_id, h, "skipped", skips[h], 0, None)
                elif n is not None and counts.get(h, 0) >= n:
                    self._settle(run_id, h, "indexed", None, n, dict(self._timings[h]))
                else:
                    continue
                settled += 1
            return settled

    def _settle(self, run_id, h, status, error, n_units, timings) -> None:
        media = self._media.pop(h, None)
        self.catalog.upsert_files([
            {**f, "units_expected": n_units, "media": media or f.get("media")}
            for f in self.catalog.files_with_hashes([h], "pending")
        ])
        for f in self.catalog.set_status(h, status, error, timings):
            self._outcome(run_id, status, f["path"], error)
        self._inflight.pop(h, None)
        self._expected.pop(h, None)
        self._timings.pop(h, None)

    def _fail_content(self, run_id: str, h: str, error: str) -> None:
        self._drop_content(h)
        self._settle(run_id, h, "failed", error, 0, None)

    def finish_run(self, run_id: str) -> dict:
        """Fail what a run left half-done, index what it wrote, then return its report."""
        with self._lock:
            for h, owner in list(self._inflight.items()):
                if owner != run_id:
                    continue
                have = self.catalog.unit_counts([h]).get(h, 0)
                self._fail_content(run_id, h, f"indexing did not complete ({have} units written)")
            self.vectors.flush()
            run = self._runs.pop(run_id, {})
            self._run_jobs.pop(run_id, None)
            stages = self._stages.pop(run_id, {})
        # The embedded engine builds no index by itself. Its cost follows what the run wrote, not
        # the index's size (~35 s per 100k new 512-d points on 2 cores); qdrant-edge 0.9 keeps
        # Python's interpreter lock while it builds, so the owner answers nothing meanwhile.
        clock = time.perf_counter()
        self.vectors.optimize()
        stages["optimize"] = stages.get("optimize", 0.0) + time.perf_counter() - clock
        report = {k: list(v) for k, v in run.items()}
        # Seconds per stage; decode and embed are summed over the units (done in parallel).
        report["stage_seconds"] = {k: round(v, 3) for k, v in stages.items()}
        return report

    # -- files that are gone ---------------------------------------------------------------
    def forget(self, paths: list[str]) -> list[str]:
        """Remove these files from the index: their catalog rows, and their contents' points and
        thumbnails once no other file holds the same content. Returns the paths removed."""
        with self._lock:
            rows = self.catalog.delete_files(list(paths))
            for h in {r["content_hash"] for r in rows if r["content_hash"]}:
                self._collect(h)
            self.vectors.flush()
            return sorted(r["path"] for r in rows)

    def reconcile(self, roots: list[str], entries: list[dict]) -> list[str]:
        """Forget the files under ``roots`` that the catalog has and the disk no longer has
        (``entries``: what a walk of the roots found; the files of folders it could not list
        are kept as they are)."""
        with self._lock:
            seen = {e["path"] for e in entries}
            kept = tuple(e["path"].rstrip("/") + "/" for e in entries if e.get("unlisted"))
            gone = [p for p in self.catalog.paths_under(list(roots)) if p not in seen and not p.startswith(kept)]
            return self.forget(gone) if gone else []

    def _drop_content(self, h: str) -> None:
        for u in self.catalog.units(h):
            if u["thumbnail"]:
                self._thumb_path(u["thumbnail"]).unlink(missing_ok=True)
        self.vectors.delete_content(h)
        self.catalog.delete_units(h)

    def _collect(self, h: str) -> None:
        """Delete a content's points once no file refers to it."""
        if h and not self.catalog.hash_in_use(h) and h not in self._inflight:
            self._drop_content(h)

    # -- thumbnails ----------------------------------------------------------------------
    def _thumb_path(self, thumb_id: str) -> Path:
        return self.thumbs / thumb_id[:2] / f"{thumb_id}.jpg"

    def _save_thumb(self, thumb_id: str, data: bytes) -> None:
        path = self._thumb_path(thumb_id)
        if path.is_file() and path.stat().st_size == len(data):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def thumbnail(self, thumb_id: str) -> bytes:
        if not _THUMB_ID.match(thumb_id or ""):
            raise NotFound("no such thumbnail")
        path = self._thumb_path(thumb_id)
        if not path.is_file():
            raise NotFound("no such thumbnail")
        return path.read_bytes()

    # -- search --------------------------------------------------------------------------
    def spaces(self) -> dict[str, int]:
        return self.vectors.spaces()

    def models(self) -> dict[str, str]:
        return {s: self.catalog.get_meta(f"model:{s}") for s in self.vectors.spaces()}

    def search(self, queries: list[SpaceQuery], top_k: int) -> list[dict]:
        """Run each ranked list, fuse by reciprocal rank, and return file results."""
        lists = self.vectors.search(queries)
        fused = join_moments(merge_moments(fuse(lists)))
        hashes = list(dict.fromkeys(h.payload["content_hash"] for h in fused))
        files = defaultdict(list)
        for f in self.catalog.files_with_hashes(hashes, "indexed"):
            files[f["content_hash"]].append(f)
        results, seen = [], set()
        for hit in fused:
            p = hit.payload
            for f in files.get(p["content_hash"], []):
                # The best unit per file; for videos and audio each moment, for documents each page.
                key = f["file_id"]
                if p["kind"] in TIMED_KINDS:
                    key = (key, p.get("start_s"))
                elif p["kind"] == "page":  # each matching page of a document
                    key = (key, p.get("page"))
                if key in seen:
                    continue
                seen.add(key)
                results.append({
                    "path": f["path"], "file_id": f["file_id"], "kind": f["kind"], "score": round(hit.score, 6),
                    "start_s": p.get("start_s"), "end_s": p.get("end_s"), "page": p.get("page"),
                    "text": p.get("text"), "thumbnail": thumbnail_url(p.get("thumbnail")),
                })
            if len(results) >= top_k:
                break
        return results[:top_k]

    # -- reports -------------------------------------------------------------------------
    def show(self, key: str) -> dict:
        key = str(key)
        row = self.catalog.file(key) or self.catalog.file(str(Path(key).expanduser().resolve()))
        if row is None:
            raise NotFound(f"{key!r} is not in the index")
        units = []
        if row["content_hash"]:
            for u in self.catalog.units(row["content_hash"]):
                units.append({
                    "unit": u["unit"], "kind": u["kind"], "space": u["space"], "start_s": u["start_s"],
                    "end_s": u["end_s"], "page": u["page"], "char_start": u["char_start"],
                    "char_end": u["char_end"], "text": u["text"], "thumbnail": thumbnail_url(u["thumbnail"]),
                })
        out = {k: row[k] for k in ("file_id", "path", "kind", "format", "status", "error", "size", "mtime",
                                   "content_hash", "units_expected", "indexed_at")}
        out["models"] = _models_of(row)
        out["timings"] = _json(row["timings"])
        out["media"] = _json(row.get("media"))
        out["units"] = units
        timed = sorted((u for u in units if u["start_s"] is not None), key=lambda u: (u["start_s"], u["unit"]))
        out["transcript"] = [{"start_s": u["start_s"], "end_s": u["end_s"], "text": u["text"]}
                             for u in timed if u["space"] == "text"]
        out["sound_windows"] = [{"start_s": u["start_s"], "end_s": u["end_s"]} for u in timed if u["space"] == "clap"]
        return out

    def reset(self, reset_type: str) -> dict:
        """``index``: drop every vector, unit and thumbnail, and mark every file pending (the next
        run embeds all again); ``database``: also forget every file; ``all``: also the record of
        which model made each space (a data dir as new)."""
        import shutil

        if reset_type not in ("all", "database", "index"):
            raise BadInput("reset_type must be one of all, database, index")
        with self._lock:
            if self._inflight:
                raise ConfigError("an indexing run is in progress; reset when it has finished")
            for space in list(self.vectors.spaces()):
                self.vectors.drop_space(space)
            self.catalog.clear_units()
            shutil.rmtree(self.thumbs, ignore_errors=True)
            if reset_type == "index":
                self.catalog.mark_all_pending()
            else:
                self.catalog.clear_files()
            if reset_type == "all":
                self.catalog.clear_meta()
            return {"reset_type": reset_type, **self.status()}

    def verify(self) -> dict:
        """Do the catalog and the vectors agree? Every indexed file's content has all its points
        and units; no point or unit belongs to a content that no file holds."""
        with self._lock:
            problems: list[dict] = []
            contents = self.catalog.contents()
            units = self.catalog.unit_counts_by_space()
            points: dict[tuple[str, str], int] = defaultdict(int)
            for space in self.vectors.spaces():
                for hit in self.vectors.scroll(space):
                    points[(hit.payload.get("content_hash"), space)] += 1
            expected = {r["content_hash"]: r["units_expected"] for r in self.catalog.indexed_contents()}
            for h, n in expected.items():
                have = sum(v for (c, _), v in units.items() if c == h)
                if have != (n or 0):
                    problems.append({"content_hash": h, "problem": f"{have} units stored, {n} expected",
                                     "paths": self._paths(h)})
            for (h, space), n in sorted(units.items()):
                if contents.get(h) is None:
                    problems.append({"content_hash": h, "problem": f"{n} {space} units of a content no file holds"})
                elif points.get((h, space), 0) != n:
                    problems.append({"content_hash": h, "problem": f"{points.get((h, space), 0)} {space} points "
                                     f"for {n} units", "paths": self._paths(h)})
            for (h, space), n in sorted(points.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
                if (h, space) not in units:
                    what = "a content no file holds" if contents.get(h) is None else "a content without units"
                    problems.append({"content_hash": h, "problem": f"{n} {space} points of {what}"})
            return {"ok": not problems, "files": sum(1 for s in contents.values() if s == "indexed"),
                    "points": sum(points.values()), "problems": problems}

    def _paths(self, h: str) -> list[str]:
        return [f["path"] for f in self.catalog.files_with_hashes([h])]

    def status(self) -> dict:
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        total: dict[str, int] = defaultdict(int)
        for r in self.catalog.counts():
            counts[r["kind"]][r["status"]] = r["files"]
            total[r["status"]] += r["files"]
        return {
            "data_dir": str(self.settings.data_dir),
            "files": dict(total),
            "kinds": dict(counts),
            "points": {space: self.vectors.count(space) for space in self.vectors.spaces()},
            "points_by_kind": {space: {kind: n for kind in KIND_ROLES if (n := self.vectors.count(space, [kind]))}
                               for space in self.vectors.spaces()},
            "models": self.models(),
            "failed": self.catalog.failed(),
            "skipped": self.catalog.skipped(),
        }


def fuse(lists: list[list[Hit]], k: int = RRF_K) -> list[Hit]:
    """Reciprocal rank fusion: scores of different models are not comparable, ranks are."""
    scores: dict[str, float] = defaultdict(float)
    payloads: dict[str, dict] = {}
    raw: dict[str, float] = {}
    for hits in lists:
        for rank, hit in enumerate(hits):
            scores[hit.id] += 1.0 / (k + rank + 1)
            payloads.setdefault(hit.id, hit.payload)
            raw.setdefault(hit.id, hit.score)
    order = sorted(scores, key=lambda i: (-scores[i], i))
    return [Hit(i, scores[i], payloads[i], raw[i]) for i in order]


def _space(payload: dict) -> str:
    # Points written before payloads named their space: only keyframes had times then.
    return payload.get("space") or ("text" if payload.get("text") else "clip")


def merge_moments(hits: list[Hit], margin: float = MERGE_MARGIN) -> list[Hit]:
    """Adjacent matching scenes (or sound windows) of one file become one hit spanning them,
    with the best member's score and thumbnail; other hits pass through. Neighbours match when
    the store's similarity is within ``margin`` of each other's (fused scores say nothing about
    how close they are)."""
    runs: dict[tuple[str, str], list[Hit]] = defaultdict(list)
    out: list[Hit] = []
    for hit in hits:
        p = hit.payload
        if p.get("kind") in TIMED_KINDS and p.get("start_s") is not None and _space(p) in MERGE_SPACES:
            runs[(p["content_hash"], _space(p))].append(hit)
        else:
            out.append(hit)
    for file_hits in runs.values():
        file_hits.sort(key=lambda h: h.payload["unit"])
        run = [file_hits[0]]
        for hit in file_hits[1:] + [None]:
            if hit is not None and hit.payload["unit"] == run[-1].payload["unit"] + 1 \
                    and abs(hit.raw - run[-1].raw) <= margin:
                run.append(hit)
                continue
            best = max(run, key=lambda h: h.score)
            payload = {**best.payload, "start_s": run[0].payload["start_s"], "end_s": run[-1].payload["end_s"]}
            out.append(Hit(best.id, best.score, payload, best.raw))
            run = [hit]
    out.sort(key=lambda h: (-h.score, h.id))
    return out


def join_moments(hits: list[Hit]) -> list[Hit]:
    """The keyframe, the sound and the speech of the same moment of a file become one hit (and
    the text chunks and the image of the same document page).

    In score order, a timed hit joins the first moment of its file whose span it overlaps; the
    moment keeps its best member's span, adds up the members' scores (as reciprocal rank fusion
    does for one item found by several lists), and takes a snippet and a thumbnail from
    whichever member has one.
    """
    moments: list[Hit] = []
    by_file: dict[str, list[int]] = defaultdict(list)
    for hit in sorted(hits, key=lambda h: (-h.score, h.id)):
        p = hit.payload
        timed = p.get("kind") in TIMED_KINDS and p.get("start_s") is not None
        paged = p.get("kind") == "page" and p.get("page") is not None
        if not (timed or paged):
            moments.append(hit)
            continue
        for i in by_file[p["content_hash"]]:
            m = moments[i].payload
            if (paged and m.get("page") == p["page"]) or \
                    (timed and p["start_s"] < m["end_s"] and m["start_s"] < p["end_s"]):
                joined = {**m, "text": m.get("text") or p.get("text"), "thumbnail": m.get("thumbnail") or p.get("thumbnail")}
                moments[i] = Hit(moments[i].id, moments[i].score + hit.score, joined, moments[i].raw)
                break
        else:
            by_file[p["content_hash"]].append(len(moments))
            moments.append(hit)
    moments.sort(key=lambda h: (-h.score, h.id))
    return moments


def _json(value):
    import json

    if value is None or isinstance(value, (dict, list)):
        return value
    return json.loads(value)


def _models_of(row: dict) -> dict:
    return _json(row.get("models")) or {}
