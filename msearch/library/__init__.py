"""The store owner's logic for one data dir: a facade over parts with one job each.

* :class:`~msearch.library.runs.RunLedger` — the runs in progress and the contents they embed;
* :class:`~msearch.library.claims.Claims` — planning and claiming what a run must embed;
* :class:`~msearch.library.writer.Writer` — writing embedded units and settling files;
* :class:`~msearch.library.contents.Contents` — forgetting contents and files that are gone;
* :class:`~msearch.library.thumbs.Thumbnails` — thumbnails by opaque id;
* :class:`~msearch.library.reports.Reports` — show, status, verify, reset.

Ranking lives in :mod:`msearch.ranking`. Exactly one process holds a :class:`Library` for a
data dir (see :mod:`msearch.owner`); the indexing pipeline and the search replicas reach it
through that process. Everything here is plain Python: Ray only wraps it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict

from msearch.errors import ConfigError, DiskFull, NotFound
from msearch.library.claims import Claims, file_id_for
from msearch.library.contents import Contents, duration_of
from msearch.library.format import FORMAT, check_format, write_format
from msearch.library.reports import Reports
from msearch.library.runs import RunLedger
from msearch.library.thumbs import Thumbnails, thumb_id_for
from msearch.library.writer import Writer
from msearch import ranking
from msearch.ranking import merge_moments
from msearch.settings import Settings
from msearch.store.catalog import Catalog
from msearch.store.vectors import SpaceQuery, VectorStore, open_vector_store

__all__ = ["Library", "file_id_for", "thumb_id_for", "merge_moments"]
log = logging.getLogger(__name__)
FILE_FIELDS_META = "points:file_fields"  # set once the points carry file fields


class Library:
    def __init__(self, settings: Settings, vectors: VectorStore | None = None, catalog: Catalog | None = None):
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        format_before = check_format(settings.data_dir)
        self.catalog = catalog or Catalog(settings.catalog_path)
        self.vectors = vectors or open_vector_store(settings)
        self.thumbs = Thumbnails(self.catalog, settings.thumbs_path)
        self.ledger = RunLedger()
        self.contents = Contents(self.catalog, self.vectors, self.thumbs, self.ledger)
        self.claims = Claims(settings, self.catalog, self.ledger, self.contents, self.give_way, self.check_space)
        self.writer = Writer(self.catalog, self.vectors, self.thumbs, self.ledger, self.contents, self.check_models,
                             self.give_way, self.check_space)
        self.reports = Reports(settings, self.catalog, self.vectors, self.thumbs)
        self._lock = threading.RLock()  # one bookkeeping call at a time; searches do not wait
        self._searches = 0  # searches running in this process; bookkeeping gives way to them
        self._quiet = threading.Condition()
        self._space_models: dict[str, str] = {}  # space -> the model its vectors were made with
        if self.catalog.get_meta(FILE_FIELDS_META) is None:
            self._stamp_all()
        if format_before != FORMAT:
            write_format(settings.data_dir)  # migrated (or new)

    def _stamp_all(self) -> None:
        """Give the points of an index from before file fields existed (folders, times, size,
        duration: what search filters read) their fields, once."""
        hashes = [r["content_hash"] for r in self.catalog.indexed_contents()]
        if hashes:
            log.info("adding file fields to the points of %d contents (once, for search filters)", len(hashes))
        for i in range(0, len(hashes), 1000):
            self.contents.restamp(hashes[i:i + 1000])
        self.vectors.flush()
        self.catalog.set_meta(FILE_FIELDS_META, "1")

    @property
    def job_alive(self):
        return self.ledger.job_alive

    @job_alive.setter
    def job_alive(self, fn) -> None:
        self.ledger.job_alive = fn

    def close(self) -> None:
        with self._lock:
            self.vectors.close()
            self.catalog.close()

    def ping(self) -> dict:
        return {"data_dir": str(self.settings.data_dir), "spaces": self.vectors.spaces()}

    def check_space(self, need: int = 0) -> None:
        """Refuse a write (:class:`DiskFull`) that would leave less than the reserve free on the
        data dir's disk: the stores map their files into memory, and a disk that fills under
        them stops the process (SIGBUS) instead of failing the write."""
        import shutil

        reserve = self.settings.index.disk_reserve_mb << 20
        free = shutil.disk_usage(self.settings.data_dir).free
        if free - need < reserve:
            raise DiskFull(f"the disk holding {self.settings.data_dir} is full: {free / 2**20:.1f} MB free, and "
                           f"msearch keeps {reserve >> 20} MB free (MSEARCH_INDEX__DISK_RESERVE_MB)"
                           f"{f' besides the {need / 2**20:.1f} MB this step writes' if need else ''}: free some "
                           "space and run again; what was indexed before is kept")

    def check_models(self, models: dict[str, str], record: bool = False) -> None:
        """Refuse a model that differs from the one a space was built with; ``record``: note the
        model of a space that has none yet (its first units are being written)."""
        for space, model in models.items():
            stored = self._space_models.get(space) or self.catalog.get_meta(f"model:{space}")
            if stored is None and record:
                self.catalog.set_meta(f"model:{space}", model)
                stored = model
            if stored:
                self._space_models[space] = stored
            if stored and stored != model:
                raise ConfigError(
                    f"this data dir's {space!r} vectors were made with {stored!r}, but the model is now "
                    f"{model!r}; vectors of two models cannot be compared. Use another MSEARCH_DATA_DIR "
                    f"or set the model back."
                )

    # -- indexing: begin, plan, claim, write, finish ------------------------------------
    def begin_run(self, run_id: str, models: dict[str, str], job_id: str | None = None) -> None:
        self.check_models(models)
        with self._lock:
            dead = self.ledger.dead_runs()
            self.writer.abandon(dead)
            for run in dead:
                self.ledger.end(run)
            self.ledger.begin(run_id, job_id)

    def plan(self, run_id: str, entries: list[dict], models: dict[str, str]) -> list[dict]:
        with self._lock:
            return self.claims.plan(run_id, entries, models)

    def claim(self, run_id: str, rows: list[dict], models: dict[str, str], missing: dict[str, str],
              hash_s: float = 0.0) -> list[dict]:
        """Record hashed files; return those whose content must be decoded and embedded
        (``hash_s``: what hashing these rows took, for the run's stage seconds)."""
        with self._lock, self.ledger.clock([run_id], "claim"):
            self.ledger.add_seconds(run_id, "hash", hash_s)
            return self.claims.claim(run_id, rows, models, missing)

    def write(self, units: list[dict], stored: bool = False) -> int:
        """Store embedded units; settle the files that are complete (see :class:`Writer`)."""
        with self._lock, self.ledger.clock({u["run_id"] for u in units if u.get("run_id")}, "write"):
            return self.writer.write(units, stored)

    def finish_run(self, run_id: str) -> dict:
        """Fail what a run left half-done, build the index over what it wrote, return its report."""
        with self._lock:
            self.writer.finish(run_id)
            outcomes, stages = self.ledger.end(run_id)
        # The embedded engine builds no index by itself. Its cost follows what the run wrote, not
        # the index's size (35-120 s per 100k new 512-d points on 2 cores); it is built in a
        # process of its own and swapped in, so searches are answered meanwhile.
        clock = time.perf_counter()
        warnings = []
        try:
            self.vectors.optimize()
        except DiskFull as e:  # the run's files are indexed; only the index build waits for room
            log.error("%s", e)
            warnings.append(str(e))
        stages["optimize"] = stages.get("optimize", 0.0) + time.perf_counter() - clock
        report = {k: list(v) for k, v in outcomes.items()}
        report["warnings"] = warnings
        # Seconds per stage; decode and embed are summed over the units (done in parallel).
        report["stage_seconds"] = {k: round(v, 3) for k, v in stages.items()}
        return report

    def abort_run(self, run_id: str, why: str) -> dict:
        """End a run that cannot go on (a full disk): what it settled stays; the contents it was
        embedding are let go without writing anything (their files stay ``pending``, and the next
        run's claim drops what they left half-written). Returns the run's report."""
        with self._lock:
            for h in self.ledger.contents_of({run_id}):
                self.ledger.release(h)
            outcomes, stages = self.ledger.end(run_id)
        report = {k: list(v) for k, v in outcomes.items()}
        report["stage_seconds"] = {k: round(v, 3) for k, v in stages.items()}
        report["error"] = why
        return report

    # -- files that are gone ---------------------------------------------------------------
    def forget(self, paths: list[str]) -> list[str]:
        with self._lock:
            return self.contents.forget(paths)

    def reconcile(self, roots: list[str], entries: list[dict]) -> list[str]:
        with self._lock:
            return self.contents.reconcile(roots, entries)

    # -- search ----------------------------------------------------------------------------
    def thumbnail(self, thumb_id: str) -> bytes:
        return self.thumbs.read(thumb_id)

    def spaces(self) -> dict[str, int]:
        return self.vectors.spaces()

    def models(self) -> dict[str, str]:
        return self.reports.models()

    def search(self, queries: list[SpaceQuery], filters=None) -> dict:
        """Run each ranked list, fuse by reciprocal rank, and return the file results (see
        :func:`msearch.ranking.search`); ``filters`` (:class:`~msearch.query.Filters`) check
        each file of a content the store's filter let through."""
        with self._quiet:
            self._searches += 1
        try:
            return ranking.search(self.vectors, queries, self.files_of, filters.admits if filters else None)
        finally:
            with self._quiet:
                self._searches -= 1
                if not self._searches:
                    self._quiet.notify_all()

    def give_way(self, most_s: float = 0.5) -> None:
        """Wait (``most_s`` at the most) while searches run in this process: bookkeeping calls
        this between their steps, so that a search waits for one step, not a whole batch, and a
        steady stream of searches still cannot stop a run."""
        with self._quiet:
            self._quiet.wait_for(lambda: not self._searches, timeout=most_s)

    def files_of(self, hashes: list[str]) -> dict[str, list[dict]]:
        """The indexed files holding each content (what a search result shows of a file)."""
        files: dict[str, list[dict]] = defaultdict(list)
        for f in self.catalog.files_with_hashes(list(hashes), "indexed"):
            files[f["content_hash"]].append({**{k: f[k] for k in ("path", "file_id", "kind", "content_hash", "size",
                                                                  "mtime")}, "duration_s": duration_of([f])})
        return dict(files)

    def indexed_file(self, file_id: str) -> dict:
        """The catalog row of an indexed file (what the media routes serve), or :class:`NotFound`."""
        row = self.catalog.file(file_id)
        if row is None or row["status"] != "indexed" or row["file_id"] != file_id:
            raise NotFound(f"no indexed file with id {file_id!r}")
        return {k: row[k] for k in ("file_id", "path", "kind", "format", "size", "mtime", "content_hash", "media")}

    def example(self, file_id: str, start_s: float | None = None, page: int | None = None) -> dict:
        """The stored vectors of an indexed file — of the moment at ``start_s`` or of ``page`` when
        given — per space, for a search of things like it: ``{content_hash, kind, vectors:
        {space: [vectors]}}``. Nothing is embedded again."""
        row = self.catalog.file(file_id)
        if row is None or row["status"] != "indexed" or not row["content_hash"]:
            raise NotFound(f"no indexed file with id {file_id!r}")
        units = self.catalog.units(row["content_hash"])
        if start_s is not None:
            units = [u for u in units if u["start_s"] is not None and u["start_s"] <= start_s <= (u["end_s"] or 0.0)]
            if not units:
                raise NotFound(f"{row['path']} has no indexed moment at {start_s} s")
        if page is not None:
            units = [u for u in units if u["page"] == page]
            if not units:
                raise NotFound(f"{row['path']} has no indexed page {page}")
        vectors: dict[str, list] = {}
        for space in dict.fromkeys(u["space"] for u in units):
            if space not in self.vectors.spaces():
                continue
            ids = [u["point_id"] for u in units if u["space"] == space and u["point_id"]]
            found = self.vectors.vectors(space, ids) if ids else {}
            if found:
                vectors[space] = list(found.values())
        return {"content_hash": row["content_hash"], "kind": row["kind"], "path": row["path"], "vectors": vectors}

    # -- reports ---------------------------------------------------------------------------
    def show(self, key: str) -> dict:
        return self.reports.show(key)

    def status(self) -> dict:
        return {**self.reports.status(), "runs": self.ledger.progress(), "damaged": dict(self.vectors.damaged)}

    def verify(self) -> dict:
        with self._lock:
            out = self.reports.verify()
        for space, why in self.vectors.damaged.items():
            out["problems"].insert(0, {"content_hash": None, "problem": f"the {space} vectors cannot be opened "
                                       f"({why}); `msearch verify --repair` sets them aside and embeds their files again"})
            out["ok"] = False
        return out

    def repair(self) -> dict:
        """Set aside what cannot be read (a damaged shard), drop what verify finds wrong (a content
        with missing units or points, points or units no file holds), and mark the files whose
        contents must be embedded again ``pending``. Returns ``{"set_aside": [folders],
        "reindex": [paths]}``: indexing those paths again completes the repair."""
        with self._lock:
            redo: set[str] = set()
            aside = []
            for space in list(self.vectors.damaged):
                redo.update(self.catalog.hashes_in_space(space))
                self.catalog.delete_units_in_space(space)
                moved = self.vectors.set_aside(space)
                aside.append(str(moved) if moved else space)
            for problem in self.reports.verify()["problems"]:
                if problem.get("content_hash"):
                    redo.add(problem["content_hash"])
            held = self.catalog.hashes_in_use(sorted(redo))
            self.contents.drop(sorted(redo))
            paths = self.catalog.mark_pending(sorted(held))
            self.vectors.flush()
            return {"set_aside": aside, "reindex": paths}

    def reset(self, reset_type: str) -> dict:
        with self._lock:
            if self.ledger.inflight:
                raise ConfigError("an indexing run is in progress; reset when it has finished")
            self._space_models.clear()
            out = self.reports.reset(reset_type)
            self.catalog.set_meta(FILE_FIELDS_META, "1")  # the points written from now on carry them
            return out

