"""The control API's work queue: one named Ray actor per data dir, shared by every ingress replica.

Each replica submits paths to it and asks it what is queued or running, so a status request
sees the same answer whichever replica it lands on. Runs are indexed one at a time, in order,
by the usual pipeline (:func:`pipelines.index.run_index`) from a thread of this actor.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque

import ray

from pipelines.owner import NAMESPACE

log = logging.getLogger(__name__)


class ProcessQueue:
    def __init__(self, settings):
        logging.basicConfig(level=settings.log_level)
        self.settings = settings
        self._state: dict[str, str] = {}  # path -> queued | processing
        self._runs: deque[list[str]] = deque()
        self._wake = threading.Condition()
        threading.Thread(target=self._work, daemon=True, name="msearch-process").start()

    def submit(self, paths: list[str]) -> int:
        """Queue ``paths`` as one run; returns how many runs are now waiting."""
        with self._wake:
            for p in paths:
                self._state.setdefault(p, "queued")
            self._runs.append(list(paths))
            self._wake.notify()
            return len(self._runs)

    def state(self) -> dict[str, str]:
        with self._wake:
            return dict(self._state)

    def _work(self) -> None:
        from pipelines.index import run_index

        while True:
            with self._wake:
                while not self._runs:
                    self._wake.wait()
                paths = self._runs.popleft()
                for p in paths:
                    self._state[p] = "processing"
            try:
                run_index(self.settings, [p for p in paths if os.path.lexists(p)], progress=False,
                          keep_actors=True)
            except Exception:  # recorded per file by the run; a failed run must not stop the queue
                log.exception("processing %d paths failed", len(paths))
            finally:
                with self._wake:
                    waiting = {p for run in self._runs for p in run}
                    for p in paths:
                        if p not in waiting:
                            self._state.pop(p, None)


def queue_name(settings) -> str:
    return f"{settings.owner_name}-process"


def get_queue(settings):
    """The data dir's queue actor in the connected Ray cluster, created on first use."""
    return ray.remote(ProcessQueue).options(
        name=queue_name(settings), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        max_concurrency=8, num_cpus=0, max_restarts=-1,
    ).remote(settings)


def stop_queue(settings) -> bool:
    try:
        actor = ray.get_actor(queue_name(settings), namespace=NAMESPACE)
    except ValueError:
        return False
    ray.kill(actor, no_restart=True)
    return True
