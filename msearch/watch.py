"""Watching folders: watchdog events, debounced and de-duplicated into batches of work.

Editors write a file several times in a row, tools create and rename temporary files, a copy of
a folder arrives as hundreds of events: a :class:`Changes` collects them until the folders have
been quiet for ``quiet_s`` (or ``max_wait_s`` has passed), then hands out one batch — the paths
to (re)index and the paths that are gone. A move is a deletion of the old path and a creation
of the new one; the content hash makes the new path share the old path's vectors, so nothing is
embedded again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from msearch.errors import MissingDependency

log = logging.getLogger(__name__)


@dataclass
class Batch:
    changed: list[str] = field(default_factory=list)  # files or folders to index
    gone: list[str] = field(default_factory=list)  # files or folders to forget

    def __bool__(self) -> bool:
        return bool(self.changed or self.gone)


class Changes:
    """Thread-safe debouncer: the observer thread adds, the indexing loop takes."""

    def __init__(self, quiet_s: float = 2.0, max_wait_s: float = 30.0, ignore: list[Path] | None = None):
        self.quiet_s, self.max_wait_s = quiet_s, max_wait_s
        self._ignore = [str(p) for p in (ignore or [])]
        self._lock = threading.Lock()
        self._paths: dict[str, str] = {}  # path -> "changed" | "gone" (the last event wins)
        self._first = self._last = 0.0

    def _note(self, path: str, what: str) -> None:
        name = os.path.basename(path)
        if name.startswith(".") or any(path == p or path.startswith(p + os.sep) for p in self._ignore):
            return  # hidden files (editor swap files, partial downloads) and msearch's own data
        with self._lock:
            now = time.monotonic()
            if not self._paths:
                self._first = now
            self._last = now
            self._paths[path] = what

    def changed(self, path: str) -> None:
        self._note(path, "changed")

    def gone(self, path: str) -> None:
        self._note(path, "gone")

    def moved(self, src: str, dest: str) -> None:
        self._note(src, "gone")
        self._note(dest, "changed")

    def take(self, now: float | None = None) -> Batch:
        """The pending batch once the folders are quiet (or events kept coming for too long)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if not self._paths or (now - self._last < self.quiet_s and now - self._first < self.max_wait_s):
                return Batch()
            paths, self._paths = self._paths, {}
        batch = Batch()
        for path, what in sorted(paths.items()):
            # Decide by what is on disk now: a file created then deleted within the batch is gone.
            (batch.changed if what == "changed" and os.path.lexists(path) else batch.gone).append(path)
        return batch


def observe(roots: list[Path], changes: Changes, poll_s: float | None = None):
    """Start a watchdog observer feeding ``changes``; ``poll_s`` uses polling (network mounts)."""
    try:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver
    except ImportError as e:
        raise MissingDependency("watchdog is not installed: pip install watchdog") from e

    class Handler(FileSystemEventHandler):
        def on_created(self, event):
            changes.changed(event.src_path)

        def on_modified(self, event):
            if not event.is_directory:  # a folder's mtime changes with every file in it
                changes.changed(event.src_path)

        def on_closed(self, event):
            changes.changed(event.src_path)

        def on_deleted(self, event):
            changes.gone(event.src_path)

        def on_moved(self, event):
            changes.moved(event.src_path, event.dest_path)

    observer = PollingObserver(timeout=poll_s) if poll_s else Observer()
    handler = Handler()
    for root in roots:
        observer.schedule(handler, str(root), recursive=True)
    observer.start()
    return observer
