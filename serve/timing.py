"""Per-request timing of a search, for the Server-Timing header.

A module of its own: Serve pickles the ingress's endpoints by value, and a thread-local object
can be reached from them only through a module (pickled by reference).
"""

import threading
import time
from contextlib import contextmanager


class Timing(threading.local):
    """Seconds a request spent waiting on the query embedders and on the store (this thread's
    request: sync endpoints run one request per thread), for the Server-Timing header."""

    def reset(self) -> None:
        self.parts = {"embed": 0.0, "store": 0.0}

    def add(self, part: str, seconds: float) -> None:
        if hasattr(self, "parts"):
            self.parts[part] += seconds

    @contextmanager
    def part(self, name: str):
        """Count the block's seconds as ``name`` of this thread's request."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def header(self, total_s: float) -> str:
        parts = {**getattr(self, "parts", {}), "total": total_s}
        return ", ".join(f"{name};dur={seconds * 1000:.1f}" for name, seconds in parts.items())


current = Timing()
