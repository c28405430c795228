"""What the benchmark scripts share: where and when a figure was taken, and how it is reported."""

import json
import os
import platform
import sys
import time
from pathlib import Path


def run_info() -> dict:
    return {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
            "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv)}


def report(out: dict, rows: list[tuple[str, object]], path: Path | None) -> None:
    """A table of the headline figures, then everything as JSON (also written to ``path``)."""
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}} {'value':>10}")
    for name, value in rows:
        print(f"{name:<{width}} {value:>10}")
    print(json.dumps(out, indent=1, ensure_ascii=False))
    if path:
        path.write_text(json.dumps(out, indent=1, ensure_ascii=False))


def wait_for_health(url: str, server, timeout: float = 300) -> float:
    """Poll ``url``/health until it answers 200; returns the seconds it took. Exits if the
    server process ends first or the time runs out."""
    import httpx

    start = time.monotonic()
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() - start > timeout:
            raise SystemExit("msearch serve did not come up")
        time.sleep(0.5)
