"""The run ledger: what the owner knows of the indexing runs in progress.

Which run embeds which content (a content is embedded once, whichever paths hold it), what each
content in flight still needs to be settled (its unit count once decode has finished, its media
facts, its seconds), each run's outcomes per file, and its seconds per stage.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Iterable


class RunLedger:
    def __init__(self):
        self.inflight: dict[str, str] = {}  # content_hash -> run id embedding it
        self.expected: dict[str, int] = {}  # content_hash -> units, once its decode has finished
        self.media: dict[str, str] = {}
        # content_hash -> the files (path, mtime, size) that claimed it: its points' file fields
        self.files: dict[str, list[dict]] = defaultdict(list)
        self.restamp: set[str] = set()  # contents whose file fields must be set again when settled
        self.timings: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.stages: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.outcomes: dict[str, dict[str, list]] = {}
        self.jobs: dict[str, str | None] = {}  # run id -> the Ray job (driver) running it
        # run id -> the files (ids) it has claimed: a claim of one again is a retried task's
        self.claimed: dict[str, set[str]] = {}
        # Whether a job's driver still runs (the owner actor answers from Ray; default: yes).
        self.job_alive: Callable[[str], bool] = lambda job_id: True

    def begin(self, run_id: str, job_id: str | None) -> None:
        self.outcomes[run_id] = defaultdict(list)
        self.jobs[run_id] = job_id
        self.claimed[run_id] = set()

    def dead_runs(self) -> set[str]:
        return {run for run, job in self.jobs.items() if job and not self.job_alive(job)}

    def end(self, run_id: str) -> tuple[dict[str, list], dict[str, float]]:
        """Forget a run; returns its outcomes and its seconds per stage."""
        self.jobs.pop(run_id, None)
        self.claimed.pop(run_id, None)
        return self.outcomes.pop(run_id, {}), dict(self.stages.pop(run_id, {}))

    def record(self, run_id: str, outcome: str, path: str, error: str | None = None) -> None:
        run = self.outcomes.setdefault(run_id, defaultdict(list))
        run[outcome].append({"path": path, "error": error} if error else {"path": path})

    def add_seconds(self, run_id: str, stage: str, seconds: float) -> None:
        self.stages[run_id][stage] += seconds

    @contextmanager
    def clock(self, runs: Iterable[str], stage: str):
        """Add the block's seconds to ``stage`` of ``runs`` (shared evenly), and the CPU seconds
        this process spent meanwhile to ``stage_cpu`` (the wall time also counts waiting for
        the CPU on a busy machine)."""
        start, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            runs = list(runs)
            for run in runs:
                self.stages[run][stage] += (time.perf_counter() - start) / len(runs)
                self.stages[run][f"{stage}_cpu"] += (time.process_time() - cpu) / len(runs)

    def progress(self) -> list[dict]:
        """The runs in progress: files settled so far per outcome, and contents still in flight."""
        for _ in range(3):  # read without the owner's lock: a dict changing meanwhile is read again
            try:
                out = []
                for run in list(self.jobs):
                    counts = {k: len(v) for k, v in list(self.outcomes.get(run, {}).items())}
                    out.append({"run_id": run, **{k: counts.get(k, 0) for k in ("indexed", "unchanged", "failed",
                                                                               "skipped")},
                                "in_flight": sum(1 for r in list(self.inflight.values()) if r == run)})
                return out
            except RuntimeError:
                continue
        return []

    def contents_of(self, runs: set[str]) -> list[str]:
        return [h for h, run in self.inflight.items() if run in runs]

    def release(self, content_hash: str) -> str | None:
        """The content is settled (or dropped): forget it; returns its media facts."""
        self.inflight.pop(content_hash, None)
        self.expected.pop(content_hash, None)
        self.timings.pop(content_hash, None)
        self.files.pop(content_hash, None)
        return self.media.pop(content_hash, None)
