"""The pipeline's end: a Ray Data :class:`~ray.data.Datasink` that writes embedded units.

Write tasks run in parallel. With the embedded store (one process may open it) each hands its
units to the store owner, a batch at a time. With a Qdrant server (``MSEARCH_QDRANT_URL``) each
task upserts its points to Qdrant itself and hands the owner only the catalog rows (units
without vectors, thumbnails): vectors never pass through one process. ``on_write_complete``
runs once, on the driver, with every task's counts.
"""

from __future__ import annotations

import logging
import time

from ray.data import Datasink
from ray.data.datasource.datasink import WriteResult

log = logging.getLogger("msearch.pipeline")
VECTOR_FIELDS = ("vector", "multi", "sparse_indices", "sparse_values")


class IndexSink(Datasink):
    def __init__(self, settings, owner=None, vectors=None, num_cpus: float = 0.1):
        self.settings = settings
        self.num_cpus = num_cpus  # each write task's CPU request
        self._owner = owner  # None: the owner actor, found by name in each write task
        self._vectors = vectors  # for a Qdrant server: this process's client (made when needed)
        self.totals = {"units": 0, "settled": 0, "write_s": 0.0}

    @property
    def direct(self) -> bool:
        """Whether write tasks store the vectors themselves (a Qdrant server, not embedded)."""
        from msearch.store.vectors import shared_server

        return self._vectors is not None or shared_server(self.settings)

    def get_name(self) -> str:
        return "Write"

    @property
    def concurrency(self) -> int | None:
        """Write tasks at once: the embedded store takes one batch at a time in its owner, so a few
        tasks keep it busy (each worker process costs seconds of imports); a Qdrant server takes
        concurrent writers."""
        return None if self.direct else self.settings.index.write_tasks

    @property
    def min_rows_per_write(self) -> int:
        return self.settings.index.write_batch_size

    def write(self, blocks, ctx) -> dict:
        from pipelines.stages import background, owner_client

        owner = self._owner or owner_client(self.settings)
        background(self.settings, task=True)
        out = {"units": 0, "settled": 0, "write_s": 0.0}
        # Ray Data hands a task several small blocks (the embedding actor's batches) to reach
        # ``min_rows_per_write``: the owner gets them as batches of ``write_batch_size`` units, not a
        # call per block (each call costs the catalog a few statements, whatever its size).
        for batch in _batches(blocks, self.settings.index.write_batch_size):
            start = time.perf_counter()
            if self.direct:
                self._store(batch)
                out["settled"] += owner.write([_without_vectors(u) for u in batch], stored=True)
            else:
                out["settled"] += owner.write(batch)
            seconds = time.perf_counter() - start
            out["units"] += sum(1 for u in batch if u.get("space") and not u.get("error"))  # not failures
            out["write_s"] += seconds
            log.info("write: %d units in %.2fs", len(batch), seconds)
        return out

    def _store(self, units: list[dict]) -> None:
        """Upsert the units' points to the Qdrant server from this write task."""
        from msearch.library.writer import to_points
        from msearch.store.vectors import open_vector_store

        if self._vectors is None:
            self._vectors = open_vector_store(self.settings)
        points, _, _ = to_points([u for u in units if u.get("vector") is not None and not u.get("error")])
        for space, space_points in points.items():
            self._vectors.ensure_space(space, len(space_points[0].dense))
            self._vectors.upsert(space, space_points)

    def on_write_complete(self, write_result: WriteResult) -> None:
        for result in write_result.write_returns:
            for key in self.totals:
                self.totals[key] += result[key]


def _without_vectors(unit: dict) -> dict:
    out = {k: v for k, v in unit.items() if k not in VECTOR_FIELDS}
    if unit.get("vector") is not None:
        out["dim"] = len(unit["vector"])
    return out


def _batches(blocks, size: int):
    """The rows of ``blocks``, in lists of ``size`` (the last one shorter)."""
    held: list[dict] = []
    for block in blocks:
        held.extend(block.to_pylist())
        whole = len(held) - len(held) % size
        yield from (held[i:i + size] for i in range(0, whole, size))
        held = held[whole:]
    if held:
        yield held
