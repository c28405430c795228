"""Ray Data stages. Each converts columns and calls the core; resources come from settings."""

from __future__ import annotations

import logging
import time

import pyarrow as pa
import ray

from msearch.embed import build_embedder
from msearch.files import hash_and_sniff
from msearch.units import decode_file, embed_units
from pipelines import schema
from pipelines.owner import NAMESPACE

log = logging.getLogger("msearch.pipeline")


def _owner(settings):
    return ray.get_actor(settings.owner_name, namespace=NAMESPACE)


def hash_and_claim(batch: pa.Table, settings, run_id: str, models: dict, missing: dict) -> pa.Table:
    """Hash and sniff files, then let the owner decide which contents need embedding."""
    start = time.perf_counter()
    rows = [{**hash_and_sniff(r["path"], settings.text.suffixes), "run_id": run_id} for r in batch.to_pylist()]
    hashed = time.perf_counter()
    emit = ray.get(_owner(settings).call.remote("claim", run_id, rows, models, missing))
    log.info("hash: %d files in %.2fs, claim %.2fs, %d to embed",
             len(rows), hashed - start, time.perf_counter() - hashed, len(emit))
    return schema.table(emit, schema.HASHED)


def decode(batch: pa.Table, settings) -> pa.Table:
    start = time.perf_counter()
    units = [u for r in batch.to_pylist() for u in decode_file(r, settings)]
    log.info("decode: %d files -> %d units in %.2fs", batch.num_rows, len(units), time.perf_counter() - start)
    return schema.table(units, schema.UNITS)


class EmbedUnits:
    """An embedding actor: loads the models once, then embeds batches of units."""

    def __init__(self, settings, roles: list[str]):
        logging.basicConfig(level=settings.log_level)
        self.embedders = {role: build_embedder(role, settings) for role in roles}

    def __call__(self, batch: pa.Table) -> pa.Table:
        start = time.perf_counter()
        rows = batch.to_pylist()
        out = embed_units(rows, self.embedders)
        log.info("embed: %d units in %.2fs", len(rows), time.perf_counter() - start)
        return schema.table(out, schema.EMBEDDED)


def write(batch: pa.Table, settings) -> pa.Table:
    start = time.perf_counter()
    rows = batch.to_pylist()
    settled = ray.get(_owner(settings).call.remote("write", rows))
    seconds = time.perf_counter() - start
    log.info("write: %d units in %.2fs, %d files settled", len(rows), seconds, settled)
    return schema.table([{"units": len(rows), "settled": settled, "write_s": seconds}], schema.WRITTEN)
