"""Search while indexing: one client queries a running `msearch serve` every 0.2 s, first while it
is idle, then while `msearch index` writes the plumbing corpus through it (free models, as in
benchmarks/plumbing.py), in one run.

    .venv/bin/python benchmarks/search_while_indexing.py [--images 3000] [--texts 2000] [--out results.json]

Goals: p99 during the run <= 3x the idle p99, no query over 1 s, no errors. The run's end (the
embedded engine building its index) is inside the "during" window.
"""

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from common import msearch_env, report, run_info, start_serve
from foundation import QUERIES, percentile
from plumbing import FAKE_MODELS, make_corpus

BIN = Path(sys.executable).parent
INTERVAL_S = 0.2


def query_loop(url: str, stop: threading.Event, out: list, errors: list, parts: dict | None = None) -> None:
    """One query every INTERVAL_S until ``stop``; latencies (ms) into ``out``, the server's own
    Server-Timing figures (ms) per part into ``parts``."""
    with httpx.Client(base_url=url, timeout=30) as client:
        i = 0
        while not stop.is_set():
            start = time.perf_counter()
            try:
                r = client.post("/api/v1/search", json={"query": QUERIES[i % len(QUERIES)], "top_k": 10})
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                elif parts is not None and "server-timing" in r.headers:
                    for part in r.headers["server-timing"].split(", "):
                        name, dur = part.split(";dur=")
                        parts.setdefault(name, []).append(float(dur))
            except httpx.HTTPError as e:
                errors.append(repr(e))
            took = time.perf_counter() - start
            out.append(took * 1000)
            i += 1
            stop.wait(max(0.0, INTERVAL_S - took))


def summary(latencies: list[float], errors: list) -> dict:
    return {"n": len(latencies), "p50_ms": round(percentile(latencies, 50), 1),
            "p99_ms": round(percentile(latencies, 99), 1), "max_ms": round(max(latencies), 1),
            "over_1s": sum(1 for v in latencies if v > 1000), "errors": len(errors), "first_errors": errors[:3]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--idle-queries", type=int, default=100)
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = run_info()
    tmp = Path(tempfile.mkdtemp(prefix="msearch-busy-"))
    make_corpus(tmp / "corpus", args.images, args.texts)
    make_corpus(tmp / "first", 50, 50, seed=1)  # something to find before the big run
    env = msearch_env(tmp / "data", FAKE_MODELS, port=str(args.port))
    url, server = start_serve(env, args.port, tmp / "serve.log")
    try:
        subprocess.run([BIN / "msearch", "index", str(tmp / "first"), "--json"], env=env, capture_output=True,
                       check=True)
        idle: list[float] = []
        idle_errors: list = []
        stop = threading.Event()
        worker = threading.Thread(target=query_loop, args=(url, stop, idle, idle_errors))
        worker.start()
        while len(idle) < args.idle_queries:
            time.sleep(0.2)
        stop.set()
        worker.join()
        busy: list[float] = []
        busy_errors: list = []
        busy_parts: dict[str, list[float]] = {}
        stop = threading.Event()
        worker = threading.Thread(target=query_loop, args=(url, stop, busy, busy_errors, busy_parts))
        worker.start()
        start = time.perf_counter()
        run = subprocess.run([BIN / "msearch", "index", str(tmp / "corpus"), "--json"], env=env,
                             capture_output=True, text=True)
        index_s = time.perf_counter() - start
        stop.set()
        worker.join()
        if run.returncode != 0:
            sys.exit(f"msearch index failed:\n{run.stderr[-3000:]}")
    finally:
        server.terminate()
        server.wait(timeout=120)
    out["idle"] = summary(idle, idle_errors)
    out["during_index"] = {**summary(busy, busy_errors), "index_s": round(index_s, 1),
                           "files": args.images + args.texts}
    # Where the server says the slowest queries' time went (the rest: the proxy and HTTP).
    out["during_index"]["server_p99_ms"] = {name: round(percentile(v, 99), 1) for name, v in busy_parts.items()}
    out["ratio_p99_during_over_idle"] = round(out["during_index"]["p99_ms"] / out["idle"]["p99_ms"], 2)
    i, b = out["idle"], out["during_index"]
    report(out, [
        ("idle p50 / p99 / max ms", f"{i['p50_ms']} / {i['p99_ms']} / {i['max_ms']}"),
        ("during index p50 / p99 / max ms", f"{b['p50_ms']} / {b['p99_ms']} / {b['max_ms']}"),
        ("p99 during / idle (goal <= 3)", out["ratio_p99_during_over_idle"]),
        ("queries over 1 s during (goal 0)", b["over_1s"]),
        ("errors idle / during (goal 0)", f"{i['errors']} / {b['errors']}"),
        ("index run s", b["index_s"]),
        *[(f"during index, server p99 {name} ms", v) for name, v in b["server_p99_ms"].items()],
    ], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
