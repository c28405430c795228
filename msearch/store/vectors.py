"""Vector stores: one collection per embedding space, behind one interface.

* :class:`EdgeStore` — the Qdrant engine in-process (qdrant-edge-py), the default. One
  shard per space under ``data_dir/vectors/<space>``. Only one process may open it.
* :class:`ClientStore` — a Qdrant server by URL through qdrant-client (the scale-out path);
  ``":memory:"`` gives qdrant-client's local mode, used in tests as a stand-in for a server.

Every space has a dense vector named ``dense``; the ``text`` space also has a sparse
``bm25`` vector with the IDF modifier; a late-interaction space (``colpali``) also has a
``multi`` vector (one row per token, MaxSim comparison, stored in float16) whose ``dense`` is the
mean of its rows: the cheap first stage of a two-stage query. Payload: ``content_hash``, ``kind``, ``unit`` and the
unit's fields (start_s, end_s, page, text, thumbnail).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

DENSE = "dense"
SPARSE = "bm25"
MULTI = "multi"
SPARSE_SPACES = frozenset({"text"})
MULTI_SPACES = frozenset({"colpali"})
# HNSW search breadth, and ACORN for filtered queries (a kind filter). At 1M 512-d points
# (benchmarks/store_scaling.py) Qdrant's defaults (ef 64, no ACORN) found 0.85 of the true top 10
# and 0.64 under a kind filter; these settings 0.96 and 0.87, at a p50 of about 3 ms.
HNSW_EF = 256
ACORN = True
# Vectors not yet in an HNSW graph below this many bytes are optimized in the owner's process:
# under Qdrant's indexing threshold (10,000 KB of vectors) the optimizer builds no graph and
# returns at once, so a copy and a process of its own would cost seconds for nothing.
IN_PROCESS_BUILD_BYTES = 4_000_000


@dataclass
class PointData:
    id: str
    payload: dict
    dense: list[float] | None = None
    sparse: tuple[list[int], list[float]] | None = None
    multi: list[list[float]] | None = None


@dataclass(frozen=True)
class Where:
    """Which points a query may return, by the file-level payload their content carries: a folder
    among ``dirs`` (every folder above every file holding the content), a modification time of
    one of those files in ``[mtime_gte, mtime_lt)``, the content's size and duration in their
    bounds; and not one of ``exclude_hashes``. Every condition is a payload index lookup."""

    dirs: tuple[str, ...] | None = None
    mtime_gte: float | None = None
    mtime_lt: float | None = None
    size_gte: int | None = None
    size_lte: int | None = None
    duration_gte: float | None = None
    duration_lte: float | None = None
    exclude_hashes: tuple[str, ...] | None = None


# The file-level payload of a content's points (what Where filters on), and each key's index.
FILE_FIELDS = {"dirs": "keyword", "mtime": "float", "size": "integer", "duration_s": "float"}


def file_fields(files: list[dict], duration_s: float | None = None) -> dict:
    """The file-level payload of a content held by ``files`` (``path``, ``mtime``, ``size`` each)."""
    dirs: dict[str, None] = {}
    for f in files:
        folder = f["path"]
        while folder not in ("/", ""):
            folder = folder.rsplit("/", 1)[0] or "/"
            dirs[folder] = None
    sizes = [f["size"] for f in files if f.get("size") is not None]
    return {"dirs": list(dirs), "mtime": sorted({float(f["mtime"]) for f in files if f.get("mtime") is not None}),
            "size": int(max(sizes)) if sizes else None, "duration_s": duration_s}


@dataclass(frozen=True)
class SpaceQuery:
    """One ranked list to fetch: a dense, sparse (``using="bm25"``) or multi-vector
    (``using="multi"``) query in one space. A multi-vector query with ``prefetch`` is two-stage:
    the ``prefetch_limit`` nearest by the pooled ``dense`` vector, re-ranked by MaxSim."""

    space: str
    vector: list[float] | tuple[list[int], list[float]] | list[list[float]]
    using: str = DENSE
    kinds: tuple[str, ...] | None = None
    limit: int = 10
    prefetch: list[float] | None = None
    prefetch_limit: int = 100
    where: Where | None = None


@dataclass
class Hit:
    id: str
    score: float
    payload: dict = field(default_factory=dict)
    raw: float = 0.0  # the store's own similarity, before fusion (comparable within one space)


def point_id(content_hash: str, unit: int, space: str, model: str) -> str:
    """Deterministic point id: the same content, unit and model always give the same id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"msearch:{content_hash}:{unit}:{space}:{model}"))


class VectorStore(Protocol):
    def spaces(self) -> dict[str, int]: ...
    def ensure_space(self, space: str, dim: int) -> None: ...
    def upsert(self, space: str, points: list[PointData]) -> None: ...
    def delete_contents(self, hashes: list[str]) -> None: ...
    def delete_points(self, ids: dict[str, list[str]]) -> None: ...
    def set_file_fields(self, fields: dict[str, dict]) -> None: ...
    def set_aside(self, space: str) -> Path | None: ...
    def drop_space(self, space: str) -> None: ...
    def search(self, queries: list[SpaceQuery]) -> list[list[Hit]]: ...
    def count(self, space: str, kinds: list[str] | None = None) -> int: ...
    def vectors(self, space: str, ids: list[str], using: str = DENSE) -> dict[str, list]: ...
    def scroll(self, space: str) -> list[Hit]: ...
    def flush(self) -> None: ...
    def optimize(self) -> None: ...
    def close(self) -> None: ...


class _Store:
    """What both backends share: the space registry, point conversion, the query loop."""

    def __init__(self):
        self.damaged: dict[str, str] = {}  # space -> why it cannot be read (the embedded engine's shards)
        self._lock = threading.RLock()
        self._dims: dict[str, int] = {}
        self.hnsw_ef, self.acorn = HNSW_EF, ACORN

    def spaces(self) -> dict[str, int]:
        return dict(self._dims)

    def ensure_space(self, space: str, dim: int) -> None:
        with self._lock:
            if space in self._dims:
                if self._dims[space] != dim:
                    from msearch.errors import ConfigError

                    raise ConfigError(
                        f"the {space!r} vectors in this data dir have {self._dims[space]} dimensions but the "
                        f"model gives {dim}: the model changed; use a new MSEARCH_DATA_DIR or delete the old "
                        "one to re-index"
                    )
                return
            self._create(space, dim, sparse=space in SPARSE_SPACES, multi=space in MULTI_SPACES)
            self._dims[space] = dim

    def _vectors(self, p: PointData) -> dict:
        vectors: dict = {}
        if p.dense is not None:
            vectors[DENSE] = list(p.dense)
        if p.sparse is not None and p.sparse[0]:
            vectors[SPARSE] = self._sparse(p.sparse)
        if p.multi is not None:
            vectors[MULTI] = [list(row) for row in p.multi]
        return vectors

    def search(self, queries: list[SpaceQuery]) -> list[list[Hit]]:
        out: list[list[Hit]] = []
        for q in queries:
            if q.space not in self._dims or (q.using == SPARSE and not q.vector[0]):
                out.append([])
                continue
            vector = self._sparse(q.vector) if q.using == SPARSE else list(q.vector)
            prefetch = (list(q.prefetch), q.prefetch_limit) if q.prefetch is not None else None
            res = self._query(q.space, vector, q.using, self._filter(q.kinds, q.where), q.limit, prefetch)
            out.append([Hit(str(r.id), float(r.score), dict(r.payload or {})) for r in res])
        return out

    def count(self, space: str, kinds: list[str] | None = None) -> int:
        return self._count(space, self._filter(kinds)) if space in self._dims else 0

    def scroll(self, space: str) -> list[Hit]:
        if space not in self._dims:
            return []
        out, offset = [], None
        while True:
            records, offset = self._scroll(space, offset)
            out.extend(Hit(str(r.id), 0.0, dict(r.payload or {})) for r in records)
            if offset is None:
                return out

    def _filter(self, kinds, where: Where | None = None):
        if not kinds and (where is None or where == Where()):
            return None
        return self._where_filter(list(kinds or ()), where or Where())

    def set_file_fields(self, fields: dict[str, dict]) -> None:
        """Give every point of each content (hash -> :func:`file_fields`) its file-level payload."""
        for content_hash, payload in fields.items():
            for space in list(self._dims):
                self._set_payload(space, content_hash, payload)

    # Backend hooks.
    def _create(self, space: str, dim: int, sparse: bool, multi: bool) -> None: raise NotImplementedError
    def _sparse(self, vector: tuple[list[int], list[float]]): raise NotImplementedError
    def _where_filter(self, kinds: list[str], where: Where): raise NotImplementedError
    def _set_payload(self, space: str, content_hash: str, payload: dict) -> None: raise NotImplementedError
    def _query(self, space, vector, using, flt, limit, prefetch=None): raise NotImplementedError
    def _count(self, space, flt) -> int: raise NotImplementedError
    def _scroll(self, space, offset): raise NotImplementedError


class EdgeStore(_Store):
    """Embedded Qdrant engine (qdrant-edge-py): one shard directory per space."""

    def __init__(self, root: Path, reserve: int = 0, build_niceness: int = 0):
        import qdrant_edge as E

        super().__init__()
        self._E = E
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, object] = {}
        self._swap = threading.Lock()  # a shard is not swapped for its rebuilt copy mid-query
        self._meta = self.root / "spaces.json"
        self.reserve = reserve  # bytes kept free on the disk (writes, a build's copy)
        self.build_niceness = build_niceness  # the CPU priority an index build lowers itself to
        if (self.root / "spaces.json").exists():
            import shutil

            free = shutil.disk_usage(self.root).free
            least = max(reserve // 4, 8 << 20)  # writes keep the whole reserve; reading needs less
            if free < least:
                from msearch.errors import DiskFull

                # Opening maps the shards' files and their write-ahead logs (two 32 MB segments
                # each) into memory: on a disk that fills meanwhile the process would die, not fail.
                raise DiskFull(f"the disk holding the vector store {self.root} is full: {free / 2**20:.1f} MB free, "
                               f"and msearch needs {least >> 20} MB free to open it (a quarter of "
                               "MSEARCH_INDEX__DISK_RESERVE_MB): free some space and run again; nothing indexed is lost")
        try:
            dims = json.loads(self._meta.read_text()) if self._meta.exists() else {}
        except (OSError, ValueError) as e:
            from msearch.errors import ConfigError

            raise ConfigError(f"the vector store's list of spaces {self._meta} is damaged ({e}); move the "
                              f"folder {self.root} away and index your folders again") from e
        for space, dim in dims.items():
            self._recover(space)
            try:
                shard = E.EdgeShard.load(str(self.root / space))
                self._index_fields(shard)
            except Exception as e:  # a damaged shard: the others still serve; verify names it
                self.damaged[space] = f"{self.root / space}: {str(e)[:300]}"
                log.error("the %s vectors cannot be opened (%s); `msearch verify --repair` rebuilds them",
                          space, self.damaged[space])
                continue
            self._shards[space] = shard
            self._dims[space] = int(dim)

    def set_aside(self, space: str) -> Path | None:
        """Move a damaged shard out of the way (kept as ``<space>.damaged-<time>``) and forget the
        space: its next write makes it anew."""
        import time

        path = self.root / space
        with self._lock:
            self.damaged.pop(space, None)
            self._dims.pop(space, None)
            shard = self._shards.pop(space, None)
            if shard is not None:
                shard.close()
            aside = None
            if path.exists():
                aside = path.with_name(f"{space}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
                path.rename(aside)
            spaces = json.loads(self._meta.read_text()) if self._meta.exists() else {}
            spaces.pop(space, None)
            tmp = self._meta.with_suffix(".tmp")
            tmp.write_text(json.dumps(spaces))
            tmp.replace(self._meta)
            return aside

    def _index_fields(self, shard) -> None:
        """Payload indexes for what queries filter on (made once; a shard from an older version
        gets the ones it lacks when it opens)."""
        E = self._E
        # File fields get no HNSW links of their own: a graph per folder (every folder above every
        # file) and per value range doubled the index build; Qdrant filters with the payload index
        # (few matches) or within the main graph (ACORN) instead.
        types = {"keyword": E.KeywordIndexParams(enable_hnsw=False), "float": E.FloatIndexParams(enable_hnsw=False),
                 "integer": E.IntegerIndexParams(lookup=False, range=True, enable_hnsw=False)}
        have = set(shard.info().payload_schema)
        for key in ("content_hash", "kind"):
            if key not in have:
                shard.update(E.UpdateOperation.create_field_index(key, E.PayloadSchemaType.Keyword))
        for key, kind in FILE_FIELDS.items():
            if key not in have:
                shard.update(E.UpdateOperation.create_field_index(key, types[kind]))

    def _recover(self, space: str) -> None:
        """Finish or undo a swap that a crash interrupted (see :meth:`optimize`)."""
        import shutil

        path = self.root / space
        old, build = path.with_name(f"{space}.old"), path.with_name(f"{space}.build")
        if not path.exists() and old.exists():
            old.rename(path)  # crashed between the two renames: the shard as it was
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(build, ignore_errors=True)

    def _create(self, space: str, dim: int, sparse: bool, multi: bool) -> None:
        if space in self.damaged:
            from msearch.errors import ConfigError

            raise ConfigError(f"the {space} vectors cannot be opened ({self.damaged[space]}); "
                              "run `msearch verify --repair` to set them aside and embed their files again")
        E = self._E
        vectors = {DENSE: E.EdgeVectorParams(size=dim, distance=E.Distance.Cosine)}
        if multi:  # exact MaxSim over the few candidates of the first stage: no HNSW graph
            vectors[MULTI] = E.EdgeVectorParams(
                size=dim, distance=E.Distance.Dot, datatype=E.VectorStorageDatatype.Float16,
                multivector_config=E.MultiVectorConfig(E.MultiVectorComparator.MaxSim),
                hnsw_config=E.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10000))
        config = E.EdgeConfig(
            vectors=vectors,
            sparse_vectors={SPARSE: E.EdgeSparseVectorParams(modifier=E.Modifier.Idf)} if sparse else None,
        )
        path = self.root / space
        # A shard created just before a crash (spaces.json not yet written) is reused.
        shard = E.EdgeShard.load(str(path)) if path.exists() else E.EdgeShard.create(str(path), config)
        self._index_fields(shard)
        self._shards[space] = shard
        tmp = self._meta.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self._dims, space: dim}))
        tmp.replace(self._meta)

    def _sparse(self, vector):
        return self._E.SparseVector(list(vector[0]), list(vector[1]))

    def _where_filter(self, kinds, where):
        E = self._E
        must, must_not = [], []
        if kinds:
            must.append(E.FieldCondition(key="kind", match=E.MatchAny(any=kinds)))
        if where.dirs:
            must.append(E.FieldCondition(key="dirs", match=E.MatchAny(any=list(where.dirs))))
        for key, low, low_incl, high, high_incl in _ranges(where):
            must.append(E.FieldCondition(key=key, range=E.RangeFloat(
                gte=low if low_incl else None, gt=None if low_incl else low,
                lte=high if high_incl else None, lt=None if high_incl else high)))
        if where.exclude_hashes:
            must_not.append(E.FieldCondition(key="content_hash", match=E.MatchAny(any=list(where.exclude_hashes))))
        return E.Filter(must=must or None, must_not=must_not or None)

    def _set_payload(self, space, content_hash, payload):
        E = self._E
        flt = E.Filter(must=[E.FieldCondition(key="content_hash", match=E.MatchValue(value=content_hash))])
        with self._lock, self._writing():
            self._shards[space].update(E.UpdateOperation.set_payload_by_filter(flt, payload))

    def upsert(self, space: str, points: list[PointData]) -> None:
        out = [self._E.Point(p.id, self._vectors(p), p.payload) for p in points]
        with self._lock, self._writing():
            self._shards[space].update(self._E.UpdateOperation.upsert_points(out))

    def delete_contents(self, hashes: list[str]) -> None:
        E = self._E
        flt = E.Filter(must=[E.FieldCondition(key="content_hash", match=E.MatchAny(any=list(hashes)))])
        with self._lock, self._writing():
            for shard in self._shards.values():
                shard.update(E.UpdateOperation.delete_points_by_filter(flt))

    def delete_points(self, ids: dict[str, list[str]]) -> None:
        with self._lock, self._writing():
            for space, point_ids in ids.items():
                if space in self._shards and point_ids:
                    self._shards[space].update(self._E.UpdateOperation.delete_points(list(point_ids)))

    def drop_space(self, space: str) -> None:
        import shutil

        with self._lock:
            shard = self._shards.pop(space, None)
            if shard is not None:
                shard.close()
            self._dims.pop(space, None)
            tmp = self._meta.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._dims))
            tmp.replace(self._meta)
            shutil.rmtree(self.root / space, ignore_errors=True)

    def _query(self, space, vector, using, flt, limit, prefetch=None):
        E = self._E
        prefetches = None
        if prefetch is not None:
            prefetches = [E.Prefetch(limit=prefetch[1], query=E.Query.Nearest(prefetch[0], using=DENSE), filter=flt)]
        params = E.SearchParams(hnsw_ef=self.hnsw_ef, acorn=E.AcornSearchParams(enable=self.acorn and flt is not None))
        request = E.QueryRequest(limit=limit, query=E.Query.Nearest(vector, using=using), prefetches=prefetches,
                                 filter=flt, params=params, with_payload=True)
        with self._swap:
            return self._shards[space].query(request)

    def _count(self, space, flt) -> int:
        with self._swap:
            return int(self._shards[space].count(self._E.CountRequest(filter=flt)))

    def _scroll(self, space, offset):
        request = self._E.ScrollRequest(limit=256, offset=offset, with_payload=True, with_vector=False)
        with self._swap:
            return self._shards[space].scroll(request)

    def vectors(self, space: str, ids: list[str], using: str = DENSE) -> dict[str, list]:
        with self._swap:
            recs = self._shards[space].retrieve(list(ids), False, [using])
        return {str(r.id): list(r.vector[using]) for r in recs}

    def flush(self) -> None:
        with self._lock, self._writing():
            for shard in self._shards.values():
                shard.flush()

    @contextmanager
    def _writing(self):
        """The engine's failure to write, when the disk is full, said as such."""
        try:
            yield
        except Exception as e:
            if "no space left" not in str(e).lower() and getattr(e, "errno", None) != 28:
                raise
            raise disk_full(f"the vector store {self.root}", self.root, e) from e

    def optimize(self) -> None:
        """Merge small segments and build the HNSW index over what was written.

        The embedded engine runs no optimizer of its own: without this every query is a full
        scan of unindexed segments. qdrant-edge keeps Python's interpreter lock while it builds
        (no other thread of the process runs meanwhile), so each shard is built as a copy in a
        process of its own (:mod:`msearch.store.index_build`) and swapped in: searches go on
        against the shard as it is, writes wait for the swap. The copy needs the shard's size
        in free disk for the while. The work follows the points written since the last build,
        mostly (segments already indexed stay as they are unless merged).
        """
        for space in list(self._shards):
            self._build(space)

    def _build(self, space: str) -> None:
        import shutil
        import subprocess
        import sys

        path = self.root / space
        build, old = path.with_name(f"{space}.build"), path.with_name(f"{space}.old")
        with self._lock:  # no write may land in the shard while its copy is built
            shard = self._shards[space]
            shard.flush()
            info = shard.info()
            pending = max(0, info.points_count - info.indexed_vectors_count) * self._dims[space] * 4
            if pending < IN_PROCESS_BUILD_BYTES:
                shard.optimize()  # nothing to build, or little: no process and no copy for it
                return
            shutil.rmtree(build, ignore_errors=True)
            # The shard's files are sparse (32 MB chunks mapped into memory, mostly holes): what
            # they hold is their allocated blocks, which a sparse copy takes again.
            size = sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())
            if shutil.disk_usage(self.root).free < 2 * size + self.reserve:  # the copy, and what the build adds
                raise disk_full(f"building the {space} index needs a copy of its shard ({size / 2**20:.0f} MB) and "
                                f"as much again: the disk of {self.root}", self.root,
                                OSError(28, "not enough space for the copy"),
                                "searches go on without the index (slower) until a run builds it")
            try:
                _sparse_copy(path, build)
            except OSError as e:  # shutil.Error too: it collects the files that could not be copied
                shutil.rmtree(build, ignore_errors=True)
                if e.errno != 28 and "no space left" not in str(e).lower():
                    raise
                raise disk_full(f"building the {space} index needs a copy of its shard ({size / 2**20:.0f} MB): "
                                f"the disk of {self.root}", self.root, e,
                                "searches go on without the index (slower) until a run builds it") from e
            try:
                done = subprocess.run([sys.executable, "-m", "msearch.store.index_build", str(build),
                                       "--niceness", str(self.build_niceness)],
                                      capture_output=True, text=True, timeout=24 * 3600)
            except (OSError, subprocess.SubprocessError) as e:
                done = subprocess.CompletedProcess([], 1, "", str(e))
            if done.returncode != 0:
                shutil.rmtree(build, ignore_errors=True)
                if "no space left" in (done.stderr or "").lower():
                    raise disk_full(f"building the {space} index: the disk of {self.root}", self.root,
                                    OSError(28, "No space left on device"),
                                    "searches go on without the index (slower) until a run builds it")
                log.warning("building the %s index in a process of its own failed (%s); building it here, "
                            "searches wait meanwhile", space, (done.stderr or "").strip()[-500:])
                shard.optimize()
                return
            if done.stdout.strip() != "optimized":
                shutil.rmtree(build, ignore_errors=True)
                return
            path.rename(old)  # the open shard keeps its files; a crash here is undone on open
            build.rename(path)
            rebuilt = self._E.EdgeShard.load(str(path))
            with self._swap:
                self._shards[space] = rebuilt
            shard.close()
            shutil.rmtree(old, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()


class ClientStore(_Store):
    """A Qdrant server through qdrant-client (or its ``:memory:`` local mode)."""

    def __init__(self, url: str, prefix: str = "msearch", api_key: str | None = None):
        from qdrant_client import QdrantClient, models

        super().__init__()
        self._m = models
        self.prefix = prefix
        self._local = url == ":memory:"
        self._client = QdrantClient(":memory:") if self._local else QdrantClient(url=url, api_key=api_key, timeout=30)
        self.refresh_spaces()

    def refresh_spaces(self) -> dict[str, int]:
        """Read the spaces from the server again (other processes create them too)."""
        prefix = self.prefix + "_"
        for c in self._client.get_collections().collections:
            if c.name.startswith(prefix) and c.name[len(prefix):] not in self._dims:
                info = self._client.get_collection(c.name)
                self._dims[c.name[len(prefix):]] = info.config.params.vectors[DENSE].size
        return self.spaces()

    def _name(self, space: str) -> str:
        return f"{self.prefix}_{space}"

    def _create(self, space: str, dim: int, sparse: bool, multi: bool) -> None:
        m = self._m
        vectors = {DENSE: m.VectorParams(size=dim, distance=m.Distance.COSINE)}
        if multi:
            vectors[MULTI] = m.VectorParams(
                size=dim, distance=m.Distance.DOT, datatype=m.Datatype.FLOAT16, hnsw_config=m.HnswConfigDiff(m=0),
                multivector_config=m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM))
        if self._client.collection_exists(self._name(space)):
            return  # another process (a write task) made it
        self._client.create_collection(
            self._name(space),
            vectors_config=vectors,
            sparse_vectors_config={SPARSE: m.SparseVectorParams(modifier=m.Modifier.IDF)} if sparse else None,
        )
        if not self._local:  # local mode has no payload indexes (and warns)
            for key in ("content_hash", "kind"):
                self._client.create_payload_index(self._name(space), key, m.PayloadSchemaType.KEYWORD)
            types = {"keyword": m.KeywordIndexParams(type="keyword", enable_hnsw=False),
                     "float": m.FloatIndexParams(type="float", enable_hnsw=False),
                     "integer": m.IntegerIndexParams(type="integer", lookup=False, range=True, enable_hnsw=False)}
            for key, kind in FILE_FIELDS.items():  # no HNSW links of their own (see EdgeStore._index_fields)
                self._client.create_payload_index(self._name(space), key, types[kind])

    def _sparse(self, vector):
        return self._m.SparseVector(indices=list(vector[0]), values=list(vector[1]))

    def _where_filter(self, kinds, where):
        m = self._m
        must, must_not = [], []
        if kinds:
            must.append(m.FieldCondition(key="kind", match=m.MatchAny(any=kinds)))
        if where.dirs:
            must.append(m.FieldCondition(key="dirs", match=m.MatchAny(any=list(where.dirs))))
        for key, low, low_incl, high, high_incl in _ranges(where):
            must.append(m.FieldCondition(key=key, range=m.Range(
                gte=low if low_incl else None, gt=None if low_incl else low,
                lte=high if high_incl else None, lt=None if high_incl else high)))
        if where.exclude_hashes:
            must_not.append(m.FieldCondition(key="content_hash", match=m.MatchAny(any=list(where.exclude_hashes))))
        return m.Filter(must=must or None, must_not=must_not or None)

    def _set_payload(self, space, content_hash, payload):
        m = self._m
        flt = m.Filter(must=[m.FieldCondition(key="content_hash", match=m.MatchValue(value=content_hash))])
        self._client.set_payload(self._name(space), payload=payload, points=m.FilterSelector(filter=flt), wait=True)

    def upsert(self, space: str, points: list[PointData]) -> None:
        out = [self._m.PointStruct(id=p.id, vector=self._vectors(p), payload=p.payload) for p in points]
        self._client.upsert(self._name(space), points=out, wait=True)

    def delete_contents(self, hashes: list[str]) -> None:
        m = self._m
        flt = m.Filter(must=[m.FieldCondition(key="content_hash", match=m.MatchAny(any=list(hashes)))])
        for space in list(self._dims):
            self._client.delete(self._name(space), points_selector=m.FilterSelector(filter=flt), wait=True)

    def delete_points(self, ids: dict[str, list[str]]) -> None:
        for space, point_ids in ids.items():
            if space in self._dims and point_ids:
                self._client.delete(self._name(space), points_selector=self._m.PointIdsList(points=list(point_ids)), wait=True)

    def drop_space(self, space: str) -> None:
        if self._dims.pop(space, None) is not None:
            self._client.delete_collection(self._name(space))

    def _query(self, space, vector, using, flt, limit, prefetch=None):
        pre = None
        if prefetch is not None:
            pre = self._m.Prefetch(query=prefetch[0], using=DENSE, limit=prefetch[1], filter=flt)
        m = self._m
        params = None if self._local else m.SearchParams(  # local mode is exact and takes none
            hnsw_ef=self.hnsw_ef, acorn=m.AcornSearchParams(enable=self.acorn and flt is not None))
        return self._client.query_points(self._name(space), query=vector, using=using, query_filter=flt,
                                         prefetch=pre, limit=limit, search_params=params, with_payload=True).points

    def _count(self, space, flt) -> int:
        return self._client.count(self._name(space), count_filter=flt, exact=True).count

    def _scroll(self, space, offset):
        return self._client.scroll(self._name(space), limit=256, offset=offset, with_payload=True,
                                   with_vectors=False)

    def vectors(self, space: str, ids: list[str], using: str = DENSE) -> dict[str, list]:
        recs = self._client.retrieve(self._name(space), ids=list(ids), with_payload=False, with_vectors=[using])
        return {str(r.id): list(r.vector[using]) for r in recs}

    def flush(self) -> None:
        pass

    def set_aside(self, space: str) -> None:
        self.drop_space(space)

    def optimize(self) -> None:
        pass  # a Qdrant server optimizes by itself; local mode has no index

    def close(self) -> None:
        self._client.close()


def _ranges(where: Where):
    """(key, low, low inclusive, high, high inclusive) of each range condition of ``where``."""
    out = []
    for key, low, high, low_incl, high_incl in (
            ("mtime", where.mtime_gte, where.mtime_lt, True, False),
            ("size", where.size_gte, where.size_lte, True, True),
            ("duration_s", where.duration_gte, where.duration_lte, True, True)):
        if low is not None or high is not None:
            out.append((key, low, low_incl, high, high_incl))
    return out


def _sparse_copy(source: Path, target: Path) -> None:
    """Copy a shard keeping its files' holes (coreutils' cp; a plain copy where there is none):
    a shard of a few megabytes spans over a hundred in mostly empty 32 MB chunks."""
    import shutil
    import subprocess

    if shutil.which("cp") is None:
        shutil.copytree(source, target)
        return
    done = subprocess.run(["cp", "-a", "--sparse=always", str(source), str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(28 if "No space left" in done.stderr else 5, done.stderr.strip() or "cp failed")


def disk_full(what: str, where: Path, e: Exception, then: str = "what was indexed before is kept; free some "
              "space and run again"):
    """A DiskFull error naming what could not be written and how much room is left."""
    import shutil

    from msearch.errors import DiskFull

    try:
        free = f"{shutil.disk_usage(where).free / 2**20:.1f} MB free"
    except OSError:
        free = "no space left"
    return DiskFull(f"{what} is full ({free}; {str(e).strip()[:160]}): {then}")


def shared_server(settings) -> bool:
    """Whether the vectors live on a Qdrant server that every process can reach (write tasks and
    search replicas then talk to it directly); ``:memory:`` is one process's own local mode."""
    return bool(settings.qdrant_url) and settings.qdrant_url != ":memory:"


def open_vector_store(settings) -> VectorStore:
    if settings.qdrant_url:
        return ClientStore(settings.qdrant_url, prefix=settings.collection, api_key=settings.qdrant_api_key)
    # The index is built at the end of a run: at the run's CPU priority, so that searches (the
    # store owner's, Serve's replicas embedding queries) get the cores first meanwhile.
    return EdgeStore(settings.vectors_path, reserve=settings.index.disk_reserve_mb << 20,
                     build_niceness=settings.index.niceness)
