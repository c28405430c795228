"""Model actors kept between runs, for drivers that index again and again.

`msearch watch`, the control API's queue and jobs submitted to a cluster that outlives them make
one run per batch of changes. With actor pools per run, each run starts a process per model
stage, imports the model runtime and loads the models: 12-14 s on a small machine for a run whose
own work is a tenth of a second (`benchmarks/freshness.py`). A kept actor is a named, detached
actor that loads its models once, serves that stage of every run that asks for the same models,
and exits after ``MSEARCH_INDEX__EMBED_KEEP_S`` seconds without work (giving back its memory,
and its GPU). Two stages have them: embedding (:class:`EmbedService`, started as a run that
embeds begins) and transcription (:class:`TranscribeService`, started by the first recording
that needs it, and loading Whisper then).

Decode tasks hand their units to the kept embedders (:class:`Embedders`) as they decode them,
and their recordings to a transcription actor (:class:`Transcribers`) in every run: a one-shot
run's own, which it ends with the run, or the kept ones. An actor that has exited (or
died) is started again by the next call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from collections import deque
from typing import Iterator

import pyarrow as pa
import ray

from pipelines.owner import NAMESPACE

log = logging.getLogger("msearch.pipeline")
_HANDLES: dict[str, object] = {}  # name -> actor handle, per worker process


class _Kept:
    """A stage's UDF, loaded once, that exits after ``keep_s`` seconds without a batch."""

    def __init__(self, udf, keep_s: float):
        self.udf = udf
        self.keep_s = keep_s
        self._last = time.monotonic()
        self._busy = 0  # calls running (an embedding actor takes one per model stream at once)
        self._lock = threading.Lock()
        threading.Thread(target=self._expire, daemon=True, name="msearch-kept-expire").start()

    def run(self, batch: pa.Table, keep_s: float | None = None) -> pa.Table:
        """Run the stage on a batch; ``keep_s``: the caller's idle time before exit (the latest run's says)."""
        if keep_s is not None:
            self.keep_s = keep_s
        with self._lock:
            self._busy += 1
        try:
            return self.udf(batch)
        finally:
            with self._lock:
                self._busy -= 1
                self._last = time.monotonic()

    def ping(self) -> int:
        """This actor's process id."""
        return os.getpid()

    def quit(self) -> None:
        ray.actor.exit_actor()

    def _expire(self) -> None:
        """Exit once no batch came for ``keep_s`` seconds and none is running (a caller whose
        batch finds the actor gone starts a new one)."""
        while True:
            time.sleep(max(0.2, min(5.0, self.keep_s / 4)))
            with self._lock:
                idle = not self._busy and time.monotonic() - self._last > self.keep_s
            if idle:
                log.info("%s idle for %.0f s: exiting", type(self).__name__, self.keep_s)
                ray.get_runtime_context().current_actor.quit.remote()
                return


class EmbedService(_Kept):
    """A kept embedding actor: the pipeline's :class:`~pipelines.stages.EmbedUnits`."""

    def __init__(self, settings, roles: list[str], keep_s: float):
        from pipelines.stages import EmbedUnits

        super().__init__(EmbedUnits(settings, roles), keep_s)


class TranscribeService(_Kept):
    """A kept transcription actor: the pipeline's :class:`~pipelines.stages.Transcribe`."""

    def __init__(self, settings, keep_s: float):
        from pipelines.stages import Transcribe

        super().__init__(Transcribe(settings), keep_s)


def _names(prefix: str, key: dict, count: int) -> list[str]:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return [f"msearch-{prefix}-{digest}-{i}" for i in range(count)]


def names(settings, roles: list[str], count: int) -> list[str]:
    """The kept embedders for these models and settings (runs that ask for the same share them)."""
    idx = settings.index
    return _names("embed", {"models": settings.models.model_dump(mode="json"), "roles": sorted(roles),
                            "threads": idx.embed_threads, "streams": idx.embed_streams, "gpus": idx.embed_num_gpus,
                            "log": settings.log_level},
                  count)


def transcriber_names(settings, count: int, run_id: str | None = None) -> list[str]:
    """The kept transcribers for this Whisper model and these speech settings (``run_id``: a
    one-shot run's own, which no other run shares)."""
    idx = settings.index
    key = {"whisper": settings.models.whisper, "speech": settings.speech.model_dump(mode="json"),
           "ffmpeg": settings.video.ffmpeg, "cpus": idx.whisper_num_cpus, "gpus": idx.whisper_num_gpus,
           "log": settings.log_level}
    return _names("transcribe", {**key, "run": run_id} if run_id else key, count)


def alive(actors: list[str]) -> int:
    """How many of these kept actors exist in the cluster now."""
    count = 0
    for name in actors:
        try:
            ray.get_actor(name, namespace=NAMESPACE)
            count += 1
        except ValueError:
            pass
    return count


def kept_options(settings, cpus: dict[str, float], stage: str = "embed", roles: list[str] = ()) -> dict:
    """The options of a kept actor of ``stage`` (embed, whisper): what a pool's actor would ask
    for (an embedding actor of ``roles`` takes one call per model stream at once)."""
    from pipelines.stages import embed_calls_at_once

    options = {"num_cpus": cpus[stage]}
    gpus = settings.index.embed_num_gpus if stage == "embed" else settings.index.whisper_num_gpus
    if gpus:
        options["num_gpus"] = gpus
    if stage == "embed" and (calls := embed_calls_at_once(settings, roles)) > 1:
        options["max_concurrency"] = calls
    return options


def start(service: type, actors: list[str], options: dict, *args) -> None:
    """Start the kept actors that are not running (without waiting: they load their models while
    the run hashes and decodes). A handle held from an earlier run may name one that has exited
    since: each is looked up again (``get_if_exists`` returns the one running). ``args``: the
    service's own, settings first (``settings, roles`` for an :class:`EmbedService`)."""
    for name in actors:
        _HANDLES.pop(name, None)
        _handle(service, name, options, args)


def stop(actors: list[str]) -> None:
    """End these actors if they run (a one-shot run's transcribers, as the run ends)."""
    for name in actors:
        _HANDLES.pop(name, None)
        try:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
        except ValueError:  # never started (no recording), or gone already
            pass


def _handle(service: type, name: str, options: dict, args: tuple, keep_s: float | None = None):
    handle = _HANDLES.get(name)
    if handle is None:
        settings = args[0]
        handle = ray.remote(service).options(
            name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, max_restarts=0,
            **options).remote(*args, settings.index.embed_keep_s if keep_s is None else keep_s)
        _HANDLES[name] = handle
    return handle


class Embedders:
    """Where a decode task sends its units with kept embedders: the actors ``names``, a batch of
    ``embed_batch_size`` units at a time, in turn. Picklable: it travels with the decode stage's
    arguments. A task keeps ``IN_FLIGHT`` batches at the actors while it decodes the next, so
    decoding and embedding overlap without a stage of their own between them (its tasks would
    be more worker processes, and Ray Data would fuse them into the write tasks, whose minimum
    of rows per task held the first batch back until 512 units were decoded)."""

    IN_FLIGHT = 2

    def __init__(self, settings, roles: list[str], names: list[str], options: dict):
        self.settings, self.roles, self.names, self.options = settings, roles, names, options

    @property
    def batch_size(self) -> int:
        return self.settings.index.embed_batch_size

    def embed(self, batches: Iterator[list[dict]]) -> Iterator[pa.Table]:
        """Each batch of units, embedded, in order: a batch goes to an actor as soon as it is
        decoded; its result is taken once ``IN_FLIGHT`` later batches are on their way too."""
        from pipelines import schema

        first = random.randrange(len(self.names))
        pending: deque = deque()  # (call, batch, actor name)
        for i, units in enumerate(batches):
            batch = schema.table(units, schema.UNITS)
            name = self.names[(first + i) % len(self.names)]
            pending.append((self._submit(name, batch), batch, name))
            while len(pending) > self.IN_FLIGHT:
                yield self._result(*pending.popleft())
        while pending:
            yield self._result(*pending.popleft())

    def _submit(self, name: str, batch: pa.Table):
        handle = _handle(EmbedService, name, self.options, (self.settings, self.roles))
        return handle.run.remote(batch, self.settings.index.embed_keep_s)

    def _result(self, call, batch: pa.Table, name: str) -> pa.Table:
        try:
            return ray.get(call)
        except ray.exceptions.RayActorError:
            # It exited (idle) or died between runs: start it again, once.
            _HANDLES.pop(name, None)
            log.info("EmbedService %s is gone; starting it again", name)
            return ray.get(self._submit(name, batch))


class Transcribers:
    """Where a decode task sends its recordings: the transcription actors ``names`` (kept ones,
    or a one-shot run's own), each started by the first recording that needs it, so that a run
    without recordings starts none and its files pass no actor. Picklable: it travels with the
    decode stage's arguments. ``keep_s``: how long one waits idle before it exits (None: the
    kept actors' ``MSEARCH_INDEX__EMBED_KEEP_S``). ``service``: the actor class."""

    def __init__(self, settings, names: list[str], options: dict, keep_s: float | None = None,
                 service: type | None = None):
        self.settings, self.names, self.options, self.keep_s = settings, names, options, keep_s
        self.service = service or TranscribeService

    def transcribe(self, rows: list[dict]) -> Iterator[dict]:
        """Hand the rows to the transcribers, one at a time to each (the first at once); yields
        them with their ``speech`` as they finish. One at a time, so that an actor that dies
        dies on the file it was given: that file is tried once more, then recorded with the
        error; the others go on."""
        from pipelines import schema

        keep_s = self.settings.index.embed_keep_s if self.keep_s is None else self.keep_s
        first = random.randrange(len(self.names))
        queues: dict[str, list[dict]] = {name: [] for name in self.names}
        for i, row in enumerate(rows):
            queues[self.names[(first + i) % len(self.names)]].append(row)
        pending = {}  # call -> (row, actor name, attempt)

        def submit(row: dict, name: str, attempt: int = 1) -> None:
            handle = _handle(self.service, name, self.options, (self.settings,), self.keep_s)
            pending[handle.run.remote(schema.table([row], schema.HASHED), keep_s)] = (row, name, attempt)

        for name, queue in queues.items():
            if queue:
                submit(queue.pop(0), name)

        def results() -> Iterator[dict]:
            while pending:
                (ready,), _ = ray.wait(list(pending), num_returns=1)
                row, name, attempt = pending.pop(ready)
                try:
                    out = ray.get(ready).to_pylist()[0]
                except ray.exceptions.RayActorError as e:
                    _HANDLES.pop(name, None)  # it exited (idle) or died: the next call starts it again
                    if attempt == 1:
                        log.info("%s %s is gone; starting it again", self.service.__name__, name)
                        submit(row, name, 2)
                        continue
                    log.error("the transcription actor died twice on %s: %s", row["path"], e)
                    out = {**row, "speech": json.dumps(
                        {"error": "transcription failed: the transcription actor died on this file"})}
                if queues[name]:
                    submit(queues[name].pop(0), name)
                yield out

        return results()
