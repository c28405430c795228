"""Ray Data stages. Each converts columns and calls the core; resources come from settings."""

from __future__ import annotations

import logging
import math
import time

import pyarrow as pa
import ray

from msearch.embed import build_embedder, build_transcriber
from msearch.files import hash_entry
from msearch.units import decode_file, embed_units, transcribe_file
from pipelines import schema
from pipelines.owner import NAMESPACE

log = logging.getLogger("msearch.pipeline")


def _owner(settings):
    return ray.get_actor(settings.owner_name, namespace=NAMESPACE)


def hash_and_claim(batch: pa.Table, settings, run_id: str, models: dict, missing: dict) -> pa.Table:
    """Hash and sniff files, then let the owner decide which contents need embedding."""
    start = time.perf_counter()
    rows = [{**hash_entry(r, settings.text.suffixes), "run_id": run_id} for r in batch.to_pylist()]
    hashed = time.perf_counter()
    emit = ray.get(_owner(settings).call.remote("claim", run_id, rows, models, missing, hashed - start))
    log.info("hash: %d files in %.2fs, claim %.2fs, %d to embed",
             len(rows), hashed - start, time.perf_counter() - hashed, len(emit))
    return schema.table(emit, schema.HASHED)


class Transcribe:
    """A transcription actor: loads Whisper on the first audio or video file, adds ``speech``."""

    def __init__(self, settings):
        logging.basicConfig(level=settings.log_level)
        self.settings = settings
        self._model = None

    def _transcriber(self):
        if self._model is None:
            threads = max(1, math.ceil(self.settings.index.whisper_num_cpus))
            self._model = build_transcriber(self.settings, cpu_threads=threads)
        return self._model

    def __call__(self, batch: pa.Table) -> pa.Table:
        start = time.perf_counter()
        rows = [transcribe_file(r, self._transcriber, self.settings) for r in batch.to_pylist()]
        timed = sum(1 for r in rows if r.get("speech"))
        if timed:
            log.info("transcribe: %d of %d files in %.2fs", timed, len(rows), time.perf_counter() - start)
        return schema.table(rows, schema.HASHED)


def decode(batch: pa.Table, settings, models: dict):
    """Yields blocks of units: a long recording's windows stream on while it is still decoding."""
    for r in batch.to_pylist():
        start = time.perf_counter()
        n = 0
        for chunk in decode_file(r, settings, models):
            n += len(chunk)
            yield schema.table(chunk, schema.UNITS)
        log.info("decode: %s -> %d units in %.2fs", r["path"], n, time.perf_counter() - start)


def _torch_threads(threads: int) -> None:
    """Ray starts an actor with OMP_NUM_THREADS set to its CPU request (1), which leaves torch one
    thread; the model runs as fast as in a plain process only with the node's cores (or the
    setting's count)."""
    import os

    import torch

    n = threads or os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
        log.info("torch uses %d threads in this actor", n)


class EmbedUnits:
    """An embedding actor: loads the models once, then embeds batches of units."""

    def __init__(self, settings, roles: list[str]):
        logging.basicConfig(level=settings.log_level)
        _torch_threads(settings.index.embed_threads)
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
