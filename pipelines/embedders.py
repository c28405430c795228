"""Embedding actors kept between runs, for drivers that index again and again.

`msearch watch`, the control API's queue and jobs submitted to a cluster that outlives them make
one run per batch of changes. With an actor pool per run, each run starts a process, imports the
model runtime and loads the models: 12-14 s on a small machine for a run whose own work is a
tenth of a second (`benchmarks/freshness.py`). A kept embedder is a named, detached actor that
loads the models once, serves the embedding stage of every run that asks for the same models,
and exits after ``MSEARCH_INDEX__EMBED_KEEP_S`` seconds without work (giving back its memory,
and its GPU).

The stage itself becomes light tasks that hand each batch to a kept embedder and wait; an
embedder that has exited (or died) is started again by the next call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time

import pyarrow as pa
import ray

from pipelines.owner import NAMESPACE

log = logging.getLogger("msearch.pipeline")
CALL_CPUS = 0.1  # a task that hands a batch to a kept embedder and waits for it
_HANDLES: dict[str, object] = {}  # name -> actor handle, per worker process


class EmbedService:
    """A kept embedding actor: the pipeline's :class:`~pipelines.stages.EmbedUnits`, loaded once."""

    def __init__(self, settings, roles: list[str], keep_s: float):
        from pipelines.stages import EmbedUnits

        self.embed_units = EmbedUnits(settings, roles)
        self.keep_s = keep_s
        self._last = time.monotonic()
        threading.Thread(target=self._expire, daemon=True, name="msearch-embed-expire").start()

    def embed(self, batch: pa.Table, keep_s: float | None = None) -> pa.Table:
        """Embed a batch; ``keep_s``: the caller's idle time before exit (the latest run's says)."""
        if keep_s is not None:
            self.keep_s = keep_s
        try:
            return self.embed_units(batch)
        finally:
            self._last = time.monotonic()

    def ping(self) -> int:
        """This actor's process id."""
        return os.getpid()

    def quit(self) -> None:
        ray.actor.exit_actor()

    def _expire(self) -> None:
        """Exit once no batch came for ``keep_s`` seconds (calls run one at a time: an exit asked
        for while a batch waits runs after it, and a later caller starts a new embedder)."""
        while True:
            time.sleep(max(0.2, min(5.0, self.keep_s / 4)))
            if time.monotonic() - self._last > self.keep_s:
                log.info("embedding actor idle for %.0f s: exiting", self.keep_s)
                ray.get_runtime_context().current_actor.quit.remote()
                return


def names(settings, roles: list[str], count: int) -> list[str]:
    """The kept embedders for these models and settings (runs that ask for the same share them)."""
    idx = settings.index
    key = json.dumps({"models": settings.models.model_dump(mode="json"), "roles": sorted(roles),
                      "threads": idx.embed_threads, "gpus": idx.embed_num_gpus, "log": settings.log_level},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return [f"msearch-embed-{digest}-{i}" for i in range(count)]


def alive(embedders: list[str]) -> int:
    """How many of these kept embedders exist in the cluster now."""
    count = 0
    for name in embedders:
        try:
            ray.get_actor(name, namespace=NAMESPACE)
            count += 1
        except ValueError:
            pass
    return count


def kept_options(settings, cpus: dict[str, float]) -> dict:
    """The resources of a kept embedding actor: what a pool's actor would ask for."""
    options = {"num_cpus": cpus["embed"]}
    if settings.index.embed_num_gpus:
        options["num_gpus"] = settings.index.embed_num_gpus
    return options


def start(settings, roles: list[str], embedders: list[str], options: dict) -> None:
    """Start the kept embedders that are not running (without waiting: they load their models
    while the run hashes and decodes). A handle held from an earlier run may name one that has
    exited since: each is looked up again (``get_if_exists`` returns the one running)."""
    for name in embedders:
        _HANDLES.pop(name, None)
        _handle(name, settings, roles, options)


def _handle(name: str, settings, roles: list[str], options: dict):
    handle = _HANDLES.get(name)
    if handle is None:
        handle = ray.remote(EmbedService).options(
            name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, max_restarts=0,
            **options).remote(settings, roles, settings.index.embed_keep_s)
        _HANDLES[name] = handle
    return handle


def embed_kept(batch: pa.Table, settings, roles: list[str], embedders: list[str], options: dict) -> pa.Table:
    """The embedding stage with kept embedders: hand the batch to one of them and wait."""
    from pipelines.stages import background

    background(settings)
    name = random.choice(embedders)
    for attempt in (1, 2):
        handle = _handle(name, settings, roles, options)
        try:
            return ray.get(handle.embed.remote(batch, settings.index.embed_keep_s))
        except ray.exceptions.RayActorError:
            # It exited (idle) or died between runs: start it again, once.
            _HANDLES.pop(name, None)
            if attempt == 2:
                raise
            log.info("embedding actor %s is gone; starting it again", name)
