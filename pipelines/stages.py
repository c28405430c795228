"""The indexing stages, described as data, and the UDFs that do their work.

:func:`index_stages` lists the stages of a run (what each calls, its arguments, its batch size
and resources, all from settings); :mod:`pipelines.runners` runs that list on Ray Data or in this
process. Each UDF converts columns and calls the core; the ones that talk to the store owner
take it as ``owner`` (the owner actor's client on Ray, a :class:`~msearch.library.Library` in
process).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import pyarrow as pa

from msearch.embed import build_embedder, build_transcriber, runs_on_torch
from msearch.files import hash_entry
from msearch.units import decode_file, embed_units, transcribe_file
from pipelines import schema

log = logging.getLogger("msearch.pipeline")
WRITE_CPUS = 0.1
RUN_TRANSCRIBER_KEEP_S = 60.0  # at least this idle before a one-shot run's transcriber exits by itself


@dataclass
class Stage:
    """One step of the pipeline: a function (run as tasks) or a class (an actor pool of
    ``actors``), its keyword arguments, how many rows it takes at once, and its resources."""

    name: str
    fn: Callable
    kwargs: dict
    batch_size: int | None  # None: a whole block per call
    num_cpus: float
    num_gpus: float = 0.0
    actors: int | None = None
    calls: int = 1  # calls an actor of the pool runs at once
    tasks: int | None = None  # tasks at once (a function's stage); None: as many as CPUs allow
    owner: bool = False  # takes the store owner as ``owner``
    options: dict = field(default_factory=dict)


def index_stages(settings, run_id: str, models: dict, missing: dict, roles: list[str], speech: bool,
                 cpus: dict[str, float], tasks: int | None = None, kept: dict[str, list[str]] | None = None
                 ) -> list[Stage]:
    """The stages of one run, in order: hash and claim, decode (which hands recordings to
    transcription actors first, with speech models), embed (an actor pool, when a model with a
    vector space is available; with kept embedders the decode tasks hand them their units
    instead). The write is the sink's. ``tasks``: hash and decode tasks at once (None: as CPUs
    allow). ``kept``: the names of kept actors (:mod:`pipelines.kept`) to embed (``embed``) and
    transcribe (``transcribe``) with, instead of an embedding actor pool and transcribers of
    this run."""
    idx = settings.index
    stages = [Stage("hash", hash_and_claim, {"settings": settings, "run_id": run_id, "models": models,
                                             "missing": missing}, idx.hash_batch_size, cpus["hash"], tasks=tasks,
                    owner=True)]
    kept = kept or {}
    transcribe = None
    if speech:
        from pipelines.kept import Transcribers, kept_options, transcriber_names

        # Recordings go from decode tasks to transcription actors; the other files pass no actor.
        # Without kept ones, the run's own: ended with it, or once idle if its driver died.
        names = kept.get("transcribe") or transcriber_names(settings, idx.whisper_actors, run_id)
        transcribe = Transcribers(settings, names, kept_options(settings, cpus, "whisper"),
                                  None if kept.get("transcribe") else max(RUN_TRANSCRIBER_KEEP_S, idx.embed_keep_s))
    embed = None
    if roles and kept.get("embed"):
        from pipelines.kept import Embedders, kept_options

        # Decode tasks hand their units to the kept embedders themselves, a batch at a time, and
        # hand on embedded units: one call of a task takes its whole block (no batch size: with
        # one, Ray Data would also gather blocks of a small run up to it), so that its batches
        # stay in flight while it decodes the next files.
        embed = Embedders(settings, roles, kept["embed"], kept_options(settings, cpus, roles=roles))
    stages.append(Stage("decode", decode, {"settings": settings, "models": models, "transcribe": transcribe,
                                           "embed": embed},
                        None if embed else idx.decode_batch_size, cpus["decode"], tasks=tasks))
    if roles and embed is None:
        stages.append(Stage("embed", EmbedUnits, {"settings": settings, "roles": roles}, idx.embed_batch_size,
                            cpus["embed"], idx.embed_num_gpus, actors=idx.embed_actors,
                            calls=embed_calls_at_once(settings, roles)))
    return stages


def background(settings, *, task: bool = False) -> None:
    """Lower the CPU priority of the calling thread (the one that runs a stage's work; threads it
    starts, and the processes it spawns, inherit it) to the indexing niceness
    (``MSEARCH_INDEX__NICENESS``), so that searches (Serve's replicas, the store owner) get the CPU
    first while a run writes. ``task``: a hash, decode or write task, which also takes the idle
    CPU class (``MSEARCH_INDEX__IDLE_TASKS``, Linux): it runs on a core that no other process
    wants, so it does not interrupt the embedding actors either. A model's threads wait for each
    other at every step, so a task that takes a core from one of them stops them all: a decode
    loop beside a kept embedder made its calls 17 % slower at the same niceness, 7 % in the idle
    class (docs/benchmarks.md).

    A thread can always lower its priority; raising it again needs privileges, so this is called
    only in threads that index (Ray gives an actor a worker process of its own, not one that ran
    tasks). With niceness 0 nothing changes: the in-process path of the tests."""
    want = settings.index.niceness
    if not want:
        return
    if os.getpriority(os.PRIO_PROCESS, 0) < want:  # Linux: the calling thread's
        os.setpriority(os.PRIO_PROCESS, 0, want)
    idle = getattr(os, "SCHED_IDLE", None)
    if task and settings.index.idle_tasks and idle is not None and os.sched_getscheduler(0) != idle:
        os.sched_setscheduler(0, idle, os.sched_param(0))


def hash_and_claim(batch: pa.Table, settings, run_id: str, models: dict, missing: dict, owner=None) -> pa.Table:
    """Hash and sniff files, then let the owner decide which contents need embedding."""
    owner = owner or owner_client(settings)
    background(settings, task=True)
    start = time.perf_counter()
    rows = [{**hash_entry(r, settings.text.suffixes), "run_id": run_id} for r in batch.to_pylist()]
    hashed = time.perf_counter()
    emit = owner.claim(run_id, rows, models, missing, hashed - start)
    log.info("hash: %d files in %.2fs, claim %.2fs, %d to embed",
             len(rows), hashed - start, time.perf_counter() - hashed, len(emit))
    return schema.table(emit, schema.HASHED)


class Transcribe:
    """Transcription (in a :class:`~pipelines.kept.TranscribeService` actor): loads Whisper on the
    first audio or video file, adds ``speech``."""

    def __init__(self, settings, transcriber=None):
        logging.basicConfig(level=settings.log_level)
        self.settings = settings
        self._model = transcriber

    def _transcriber(self):
        if self._model is None:
            threads = max(1, math.ceil(self.settings.index.whisper_num_cpus))
            self._model = build_transcriber(self.settings, cpu_threads=threads)
        return self._model

    def __call__(self, batch: pa.Table) -> pa.Table:
        background(self.settings)
        start = time.perf_counter()
        rows = [transcribe_file(r, self._transcriber, self.settings) for r in batch.to_pylist()]
        timed = sum(1 for r in rows if r.get("speech"))
        if timed:
            log.info("transcribe: %d of %d files in %.2fs", timed, len(rows), time.perf_counter() - start)
        return schema.table(rows, schema.HASHED)

    def transcribe(self, rows: list[dict]) -> Iterator[dict]:
        """The rows with their ``speech``, one at a time, in this process (as
        :class:`~pipelines.kept.Transcribers` does through actors)."""
        for r in rows:
            yield transcribe_file(r, self._transcriber, self.settings)


def recording(row: dict) -> bool:
    """Whether the file is one that transcription takes (audio or video, read without error)."""
    return row.get("kind") in ("audio", "video") and not row.get("error")


def decode(batch: pa.Table, settings, models: dict, transcribe=None, embed=None):
    """Yields blocks of units: a long recording's windows stream on while it is still decoding;
    the units of small files are gathered into blocks of up to ``decode_block_units``.
    ``transcribe``: where recordings get their transcripts (a :class:`~pipelines.kept.Transcribers`
    or a :class:`Transcribe`); they are handed over first, and decoded as their transcripts come
    back, after the batch's other files. ``embed``: kept embedders (a
    :class:`~pipelines.kept.Embedders`) that embed the units in batches as they are decoded; the
    blocks are then of embedded units."""
    background(settings, task=True)
    rows = batch.to_pylist()
    if transcribe is not None and any(recording(r) for r in rows):
        later = transcribe.transcribe([r for r in rows if recording(r)])
        rows = itertools.chain([r for r in rows if not recording(r)], later)
    if embed is not None:
        yield from embed.embed(_units(rows, settings, models, embed.batch_size))
        return
    for units in _units(rows, settings, models, settings.index.decode_block_units):
        yield schema.table(units, schema.UNITS)


def _units(rows: Iterable[dict], settings, models: dict, size: int) -> Iterator[list[dict]]:
    """The rows' units, in lists of ``size`` (the last may be shorter; a long file's chunks go
    on as they come)."""
    held: list[dict] = []
    for r in rows:
        start = time.perf_counter()
        n = 0
        for chunk in decode_file(r, settings, models):
            n += len(chunk)
            held.extend(chunk)
            while len(held) >= size:
                yield held[:size]
                held = held[size:]
        log.debug("decode: %s -> %d units in %.2fs", r["path"], n, time.perf_counter() - start)
    if held:
        yield held


def torch_threads(settings) -> None:
    """Give torch the embedding threads of ``settings``, shared by the model's streams. Ray starts an actor with OMP_NUM_THREADS set to its CPU request (1), which leaves torch one
    thread; the model runs as fast as in a plain process only with the node's cores (or the
    setting's count), shared by its streams."""
    import os

    import torch

    from msearch.embed.infinity import model_streams

    streams = model_streams(settings)
    n = max(1, (settings.index.embed_threads or os.cpu_count() or 1) // streams)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
        log.info("torch uses %d threads in this actor (%d per model stream)", n * streams, n)


def embed_calls_at_once(settings, roles: list[str]) -> int:
    """Calls an embedding actor of ``roles`` takes at once: one per model stream (see
    :func:`~msearch.embed.infinity.model_streams`), so that the next call's batches wait in the
    model's queue while a stream finishes the last one. With one call at a time, the streams
    stood idle between calls (while the actor took the next batch in and handed the last one
    on) and whenever one finished its half of a call first: a tenth of the two cores."""
    if not any(runs_on_torch(getattr(settings.models, role)) for role in roles):
        return 1
    from msearch.embed.infinity import model_streams

    return model_streams(settings, "cuda" if settings.index.embed_num_gpus and settings.device != "cpu" else "cpu")


class EmbedUnits:
    """An embedding actor: loads the models once (or takes them built), then embeds batches."""

    def __init__(self, settings, roles: list[str], embedders: dict | None = None):
        logging.basicConfig(level=settings.log_level)
        if embedders is None:
            if any(runs_on_torch(getattr(settings.models, role)) for role in roles):
                torch_threads(settings)
            embedders = {role: build_embedder(role, settings) for role in roles}
        self.embedders = embedders
        self.settings = settings

    def __call__(self, batch: pa.Table) -> pa.Table:
        background(self.settings)
        start = time.perf_counter()
        rows = batch.to_pylist()
        out = embed_units(rows, self.embedders)
        log.info("embed: %d units in %.2fs", len(rows), time.perf_counter() - start)
        return schema.table(out, schema.EMBEDDED)


def owner_client(settings):
    """The store owner of ``settings.data_dir`` in the connected Ray cluster."""
    from pipelines.owner import OwnerClient, get_owner

    return OwnerClient(get_owner(settings, create=False))
