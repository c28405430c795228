"""``msearch watch``: keep the index equal to folders as they change.

An initial run indexes the folders (and forgets what left them while nothing watched); then
watchdog events, debounced into batches, are indexed as they settle — created and modified
files (re)indexed, deleted ones forgotten, moved ones re-pointed without embedding again — and
a full reconciliation run every ``reconcile_s`` catches events that were missed (an inotify
queue overflow, a network mount, a crash).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from msearch.files import check_roots
from msearch.settings import Settings
from msearch.watch import Changes, observe
from pipelines.index import format_summary, run_index
from pipelines.owner import OwnerClient, get_owner

log = logging.getLogger("msearch.watch")


def run_watch(settings: Settings, roots: list[str], *, poll_s: float | None = None, quiet_s: float = 2.0,
              reconcile_s: float = 600.0, as_json: bool = False, stop: threading.Event | None = None,
              out=None) -> int:
    """Watch ``roots`` until ``stop`` is set (or the process is interrupted)."""
    stop = stop or threading.Event()
    paths = check_roots(roots)
    changes = Changes(quiet_s=quiet_s, ignore=[settings.data_dir])
    observer = observe(paths, changes, poll_s)  # before the first run, so nothing falls between
    report = _reporter(as_json, out or sys.stdout)
    try:
        report("initial", run_index(settings, [str(p) for p in paths], progress=False, keep_actors=True))
        next_full = time.monotonic() + reconcile_s
        while not stop.wait(0.25):
            batch = changes.take()
            if batch:
                _apply(settings, paths, batch, report)
            if time.monotonic() >= next_full:
                report("reconcile", run_index(settings, [str(p) for p in paths], progress=False, keep_actors=True))
                next_full = time.monotonic() + reconcile_s
    finally:
        observer.stop()
        observer.join(timeout=10)
    return 0


def _apply(settings: Settings, roots: list[Path], batch, report) -> None:
    """Index what changed first, then forget what is gone: a moved file's new path claims the
    content while the old path still holds it, so its vectors are kept, not embedded again."""
    owner = OwnerClient(get_owner(settings))
    present = [p for p in batch.changed if os.path.lexists(p)]
    summary = {"seen": 0, "indexed": 0, "unchanged": 0, "failed": [], "skipped": [], "units": 0,
               "removed": [], "missing_models": {}, "seconds": 0.0}
    if present:
        try:
            summary = run_index(settings, present, progress=False, keep_actors=True)
        except Exception as e:  # one bad batch (a file vanished mid-way, ...) must not end the watch
            log.warning("indexing %d changed paths failed: %s; the next reconciliation retries", len(present), e)
    removed = []
    for path in batch.gone:
        # A folder that went away takes its files with it; a file is forgotten by its path.
        if not os.path.lexists(path):
            removed += owner.reconcile([path], [])
    summary["removed"] = removed + summary.get("removed", [])
    if present or removed:
        report("changes", summary)


def _reporter(as_json: bool, out):
    def report(what: str, summary: dict) -> None:
        if as_json:
            print(json.dumps({"event": what, **summary}, ensure_ascii=False), file=out, flush=True)
        else:
            print(f"[{time.strftime('%H:%M:%S')}] {what}: {format_summary(summary)}", file=out, flush=True)
    return report
