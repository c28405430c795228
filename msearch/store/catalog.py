"""The file catalog in DuckDB: one row per file path, the units cut from each content."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any, Iterable

import duckdb
import pyarrow as pa

from msearch.errors import ConfigError, DiskFull

STATUSES = ("indexed", "failed", "skipped", "pending")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS files (
    file_id VARCHAR PRIMARY KEY,
    path VARCHAR NOT NULL,
    size BIGINT,
    mtime DOUBLE,
    content_hash VARCHAR,
    kind VARCHAR,
    format VARCHAR,
    status VARCHAR NOT NULL,
    error VARCHAR,
    units_expected INTEGER,
    models VARCHAR,
    timings VARCHAR,
    updated_at DOUBLE,
    indexed_at DOUBLE
);
ALTER TABLE files ADD COLUMN IF NOT EXISTS media VARCHAR;
ALTER TABLE files ADD COLUMN IF NOT EXISTS attempts INTEGER;
ALTER TABLE files ADD COLUMN IF NOT EXISTS warning VARCHAR;
CREATE INDEX IF NOT EXISTS files_hash ON files (content_hash);
CREATE INDEX IF NOT EXISTS files_path ON files (path);
CREATE TABLE IF NOT EXISTS units (
    content_hash VARCHAR NOT NULL,
    unit INTEGER NOT NULL,
    space VARCHAR NOT NULL,
    kind VARCHAR,
    start_s DOUBLE,
    end_s DOUBLE,
    page INTEGER,
    char_start INTEGER,
    char_end INTEGER,
    text VARCHAR,
    thumbnail VARCHAR,
    point_id VARCHAR,
    model VARCHAR,
    PRIMARY KEY (content_hash, unit, space)
);
CREATE TABLE IF NOT EXISTS thumbs (id VARCHAR PRIMARY KEY, jpeg BLOB NOT NULL);
"""

FILE_COLUMNS = (
    "file_id", "path", "size", "mtime", "content_hash", "kind", "format", "status", "error",
    "units_expected", "models", "timings", "updated_at", "indexed_at", "media", "attempts", "warning",
)
UNIT_COLUMNS = (
    "content_hash", "unit", "space", "kind", "start_s", "end_s", "page", "char_start",
    "char_end", "text", "thumbnail", "point_id", "model",
)
_TYPES = {"size": pa.int64(), "mtime": pa.float64(), "units_expected": pa.int32(), "updated_at": pa.float64(),
          "indexed_at": pa.float64(), "attempts": pa.int32(), "unit": pa.int32(), "start_s": pa.float64(),
          "end_s": pa.float64(), "page": pa.int32(), "char_start": pa.int32(), "char_end": pa.int32()}
FILE_SCHEMA = pa.schema([(c, _TYPES.get(c, pa.string())) for c in FILE_COLUMNS])
UNIT_SCHEMA = pa.schema([(c, _TYPES.get(c, pa.string())) for c in UNIT_COLUMNS])
THUMB_SCHEMA = pa.schema([("id", pa.string()), ("jpeg", pa.binary())])
SETTLE_SCHEMA = pa.schema([(c, _TYPES.get(c, pa.string())) for c in
                           ("content_hash", "status", "error", "units_expected", "media", "timings", "warning")])


def damaged_catalog(path: str, e: Exception) -> str:
    return (f"the catalog {path} is damaged and cannot be opened ({str(e).strip()[:300]}). Move it away "
            f"(with its .wal file), then index your folders again (msearch index PATH...): the catalog is made "
            f"anew and every file is embedded again; or restore it from a backup")


def _fetch(cur, sql: str, params: Iterable[Any]) -> list[dict]:
    cur.execute(sql, list(params))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


class Catalog:
    """DuckDB file catalog. One process opens it (DuckDB's file lock enforces that)."""

    def __init__(self, path: Path | str):
        self.path = str(path)
        try:
            self._con = duckdb.connect(self.path)
        except duckdb.IOException as e:
            if "lock" in str(e).lower():
                raise ConfigError(f"cannot open catalog {self.path}: {e}") from e
            raise ConfigError(damaged_catalog(self.path, e)) from e
        except duckdb.Error as e:
            raise ConfigError(damaged_catalog(self.path, e)) from e
        self._lock = threading.RLock()
        self._local = threading.local()  # a reading thread's own cursor (see _rows)
        self._cursors: list = []
        try:
            self._con.execute(_SCHEMA)
            # Touch every table once: damage to them shows now, named, not in the middle of a run.
            for table in ("files", "units", "thumbs", "meta"):
                self._con.execute(f"SELECT count(*) FROM {table}").fetchall()
        except duckdb.Error as e:
            self._con.close()
            raise ConfigError(damaged_catalog(self.path, e)) from e

    def close(self) -> None:
        with self._lock:
            for cur in self._cursors:
                cur.close()
            self._con.close()

    # -- helpers -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _reading(self):
        """DuckDB's failures as what they mean: a full disk, or a damaged catalog file."""
        try:
            yield
        except (duckdb.IOException, duckdb.InternalException, duckdb.SerializationException) as e:
            if "no space left" in str(e).lower() or "disk is full" in str(e).lower():
                raise DiskFull(f"the disk holding the catalog {self.path} is full ({str(e).strip()[:200]}); free "
                               "some space and run again: what was indexed before is kept") from e
            if "lock" in str(e).lower():
                raise ConfigError(f"cannot use catalog {self.path}: {e}") from e
            raise ConfigError(damaged_catalog(self.path, e)) from e

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict]:
        """A read, on this thread's own cursor: it does not wait for the statement another thread
        is writing with (a search's or a media route's lookup during a run). DuckDB runs both at
        once and lets the read see what was committed before; the bookkeeping that reads and
        then writes is one thread at a time in the store owner, so it sees its own writes."""
        with self._reading():
            return _fetch(self._cursor(), sql, params)

    def _cursor(self):
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            with self._lock:
                cur = self._local.cursor = self._con.cursor()
                self._cursors.append(cur)  # a few: the owner's threads
        return cur

    def _exec(self, sql: str, params: Iterable[Any] = ()) -> None:
        with self._lock, self._reading():
            self._con.execute(sql, list(params))

    # -- meta ----------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", [key])
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._exec("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    # -- files ---------------------------------------------------------------------------
    def files_by_path(self, paths: list[str]) -> dict[str, dict]:
        if not paths:
            return {}
        rows = self._rows("SELECT * FROM files WHERE path IN (SELECT unnest(?))", [paths])
        return {r["path"]: r for r in rows}

    def file(self, key: str) -> dict | None:
        rows = self._rows("SELECT * FROM files WHERE file_id = ? OR path = ?", [key, key])
        return rows[0] if rows else None

    def files_with_hashes(self, hashes: list[str], status: str | None = None) -> list[dict]:
        if not hashes:
            return []
        sql = "SELECT * FROM files WHERE content_hash IN (SELECT unnest(?))"
        params: list[Any] = [hashes]
        if status:
            sql += " AND status = ?"
            params.append(status)
        return self._rows(sql + " ORDER BY path", params)

    def upsert_files(self, rows: list[dict]) -> None:
        """Insert or replace file rows (keyed by ``file_id``; the last of a repeated id wins)."""
        if not rows:
            return
        now = time.time()
        by_id = {}
        for row in rows:
            full = {c: row.get(c) for c in FILE_COLUMNS}
            full["updated_at"] = now
            for key in ("models", "timings", "media"):
                if isinstance(full[key], (dict, list)):
                    full[key] = json.dumps(full[key], sort_keys=True)
            by_id[full["file_id"]] = full
        self._insert("files", FILE_SCHEMA, list(by_id.values()), replace=True)

    def _insert(self, table: str, schema: pa.Schema, rows: list[dict], replace: bool) -> None:
        """One bulk statement for many rows, through an Arrow table (DuckDB runs a row-by-row
        INSERT at a few ms a row)."""
        data = pa.Table.from_pylist(rows, schema=schema)
        names = ", ".join(schema.names)
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        with self._lock, self._reading():
            self._con.register("incoming", data)
            try:
                self._con.execute(f"{verb} INTO {table} ({names}) SELECT {names} FROM incoming")
            finally:
                self._con.unregister("incoming")

    def settle(self, outcomes: list[dict]) -> list[dict]:
        """Give every pending file of each content its outcome, in one statement.

        ``outcomes``: ``{content_hash, status, error, units_expected, media, timings, warning}`` each
        (``media`` and ``timings`` as JSON text or None: None keeps what the row has). Returns
        ``{path, content_hash, status, error}`` of the files that changed.
        """
        if not outcomes:
            return []
        now = time.time()
        names = SETTLE_SCHEMA.names
        rows = {o["content_hash"]: {**{c: o.get(c) for c in names}, "now": now} for o in outcomes}
        data = pa.Table.from_pylist(list(rows.values()), schema=SETTLE_SCHEMA.append(pa.field("now", pa.float64())))
        with self._lock, self._reading():
            self._con.register("outcomes", data)
            try:
                changed = self._con.execute(
                    "UPDATE files SET status = o.status, error = o.error, updated_at = o.now, "
                    "indexed_at = CASE WHEN o.status = 'indexed' THEN o.now END, "
                    "units_expected = o.units_expected, media = coalesce(o.media, files.media), warning = o.warning, "
                    "timings = coalesce(o.timings, files.timings), "
                    "attempts = CASE WHEN o.status = 'failed' THEN coalesce(files.attempts, 0) + 1 ELSE 0 END "
                    "FROM outcomes o WHERE files.content_hash = o.content_hash AND files.status = 'pending' "
                    "RETURNING files.path, files.content_hash, files.status, files.error"
                ).fetchall()
            finally:
                self._con.unregister("outcomes")
        return [dict(zip(("path", "content_hash", "status", "error"), r)) for r in changed]

    def set_status(self, content_hash: str, status: str, error: str | None = None,
                   timings: dict | None = None) -> list[dict]:
        """Set the status of every pending file holding ``content_hash``; returns them."""
        now = time.time()
        indexed_at = now if status == "indexed" else None
        self._exec(
            "UPDATE files SET status = ?, error = ?, updated_at = ?, indexed_at = ?, "
            "timings = coalesce(?, timings), "
            "attempts = CASE WHEN ? = 'failed' THEN coalesce(attempts, 0) + 1 ELSE 0 END "
            "WHERE content_hash = ? AND status = 'pending'",
            [status, error, now, indexed_at, json.dumps(timings) if timings else None, status, content_hash],
        )
        return self.files_with_hashes([content_hash], status)

    def hash_in_use(self, content_hash: str, except_path: str | None = None) -> bool:
        rows = self._rows(
            "SELECT count(*) AS n FROM files WHERE content_hash = ? AND path IS DISTINCT FROM ?",
            [content_hash, except_path],
        )
        return rows[0]["n"] > 0

    # -- units ---------------------------------------------------------------------------
    def add_units(self, rows: list[dict]) -> None:
        if not rows:
            return
        by_key = {(r["content_hash"], r["unit"], r["space"]): {c: r.get(c) for c in UNIT_COLUMNS} for r in rows}
        self._insert("units", UNIT_SCHEMA, list(by_key.values()), replace=True)

    def units(self, content_hash: str) -> list[dict]:
        return self._rows(
            "SELECT * FROM units WHERE content_hash = ? ORDER BY unit, space", [content_hash]
        )

    def unit_counts(self, hashes: list[str]) -> dict[str, int]:
        if not hashes:
            return {}
        rows = self._rows(
            "SELECT content_hash, count(*) AS n FROM units WHERE content_hash IN (SELECT unnest(?)) "
            "GROUP BY content_hash",
            [hashes],
        )
        return {r["content_hash"]: r["n"] for r in rows}

    def delete_units(self, hashes: list[str]) -> None:
        if hashes:
            self._exec("DELETE FROM units WHERE content_hash IN (SELECT unnest(?))", [list(hashes)])

    def thumbnails_of(self, hashes: list[str]) -> list[str]:
        """The thumbnail ids of these contents' units."""
        if not hashes:
            return []
        return [r["thumbnail"] for r in self._rows(
            "SELECT DISTINCT thumbnail FROM units WHERE content_hash IN (SELECT unnest(?)) AND thumbnail IS NOT NULL",
            [list(hashes)])]

    def hashes_with_units(self, hashes: list[str]) -> set[str]:
        """Those of ``hashes`` that have units."""
        if not hashes:
            return set()
        return {r["content_hash"] for r in self._rows(
            "SELECT DISTINCT content_hash FROM units WHERE content_hash IN (SELECT unnest(?))", [list(hashes)])}

    def hashes_in_space(self, space: str) -> set[str]:
        """The contents that have units in ``space``."""
        return {r["content_hash"] for r in self._rows(
            "SELECT DISTINCT content_hash FROM units WHERE space = ?", [space])}

    def delete_units_in_space(self, space: str) -> None:
        self._exec("DELETE FROM units WHERE space = ?", [space])

    def mark_pending(self, hashes: list[str]) -> list[str]:
        """Every file of these contents must be indexed again; returns their paths."""
        if not hashes:
            return []
        rows = self._rows("SELECT path FROM files WHERE content_hash IN (SELECT unnest(?)) ORDER BY path", [hashes])
        self._exec("UPDATE files SET status = 'pending', error = NULL, warning = NULL, units_expected = NULL, "
                   "indexed_at = NULL WHERE content_hash IN (SELECT unnest(?))", [hashes])
        return [r["path"] for r in rows]

    def hashes_in_use(self, hashes: list[str]) -> set[str]:
        """Those of ``hashes`` that some file still holds."""
        if not hashes:
            return set()
        return {r["content_hash"] for r in self._rows(
            "SELECT DISTINCT content_hash FROM files WHERE content_hash IN (SELECT unnest(?))", [list(hashes)])}

    # -- thumbnails ------------------------------------------------------------------------
    def put_thumbnails(self, thumbs: dict[str, bytes]) -> None:
        if thumbs:
            rows = [{"id": k, "jpeg": v} for k, v in thumbs.items()]
            self._insert("thumbs", THUMB_SCHEMA, rows, replace=True)

    def thumbnail(self, thumb_id: str) -> bytes | None:
        rows = self._rows("SELECT jpeg FROM thumbs WHERE id = ?", [thumb_id])
        return bytes(rows[0]["jpeg"]) if rows else None

    def delete_thumbnails(self, thumb_ids: list[str]) -> None:
        if thumb_ids:
            self._exec("DELETE FROM thumbs WHERE id IN (SELECT unnest(?))", [list(thumb_ids)])

    def clear_thumbnails(self) -> None:
        self._exec("DELETE FROM thumbs")

    def thumbnail_exists(self, thumb_id: str) -> bool:
        return bool(self._rows("SELECT 1 FROM units WHERE thumbnail = ? LIMIT 1", [thumb_id]))

    def paths_under(self, roots: list[str]) -> list[str]:
        """Catalog paths equal to or inside any of ``roots`` (absolute, without a trailing /)."""
        if not roots:
            return []
        exact = {r.rstrip("/") for r in roots}
        prefixes = tuple(r + "/" for r in exact)
        return [r["path"] for r in self._rows("SELECT path FROM files ORDER BY path")
                if r["path"] in exact or r["path"].startswith(prefixes)]

    def delete_files(self, paths: list[str]) -> list[dict]:
        """Remove these paths' rows; returns the removed rows."""
        rows = list(self.files_by_path(paths).values())
        if rows:
            self._exec("DELETE FROM files WHERE path IN (SELECT unnest(?))", [paths])
        return rows

    def contents(self) -> dict[str, str]:
        """content_hash -> the status that counts for it (indexed wins) over every file."""
        out: dict[str, str] = {}
        for r in self._rows("SELECT content_hash, status FROM files WHERE content_hash IS NOT NULL"):
            if out.get(r["content_hash"]) != "indexed":
                out[r["content_hash"]] = r["status"]
        return out

    def clear_units(self) -> None:
        self._exec("DELETE FROM units")

    def clear_files(self) -> None:
        self._exec("DELETE FROM files")

    def clear_meta(self) -> None:
        self._exec("DELETE FROM meta")

    def mark_all_pending(self) -> None:
        """Every file must be indexed again (its size and mtime no longer count as done)."""
        self._exec("UPDATE files SET status = 'pending', error = NULL, units_expected = NULL, indexed_at = NULL")

    def indexed_contents(self) -> list[dict]:
        return self._rows("SELECT content_hash, max(units_expected) AS units_expected FROM files "
                          "WHERE status = 'indexed' AND content_hash IS NOT NULL GROUP BY content_hash")

    def unit_counts_by_space(self) -> dict[tuple[str, str], int]:
        rows = self._rows("SELECT content_hash, space, count(*) AS n FROM units GROUP BY ALL")
        return {(r["content_hash"], r["space"]): r["n"] for r in rows}

    # -- reports -------------------------------------------------------------------------
    def counts(self) -> list[dict]:
        return self._rows(
            "SELECT coalesce(kind, 'unknown') AS kind, status, count(*) AS files "
            "FROM files GROUP BY ALL ORDER BY kind, status"
        )

    def failed(self, limit: int = 1000) -> list[dict]:
        return self._rows(
            "SELECT path, error FROM files WHERE status = 'failed' ORDER BY path LIMIT ?", [limit]
        )

    def warned(self, limit: int = 1000) -> list[dict]:
        """Files indexed from what could be read of them, with what was lost."""
        return self._rows(
            "SELECT path, warning FROM files WHERE status = 'indexed' AND warning IS NOT NULL ORDER BY path LIMIT ?",
            [limit])

    def skipped(self, limit: int = 1000) -> list[dict]:
        return self._rows(
            "SELECT path, error FROM files WHERE status = 'skipped' ORDER BY path LIMIT ?", [limit]
        )
