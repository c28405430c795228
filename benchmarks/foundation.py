"""Time the foundation end to end: index the sample folder through a running `msearch serve`,
then search latency over HTTP (sequential queries). Prints a table and writes JSON.

    .venv/bin/python benchmarks/foundation.py [--queries 50] [--out results.json]
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import wait_for_health

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
QUERIES = [
    "how much money will we spend next year", "红色汽车在雨中", "the interviewee says budget",
    "growing vegetables", "a red circle", "football match result", "预算会议", "planets and moons",
    "caramelised onions", "blue square on white",
]


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="msearch-bench-"))
    sample = tmp / "sample"
    subprocess.run([sys.executable, ROOT / "scripts" / "make_sample.py", sample], check=True, capture_output=True)
    env = dict(os.environ, MSEARCH_DATA_DIR=str(tmp / "data"), MSEARCH_PORT=str(args.port),
               MSEARCH_DASHBOARD=os.environ.get("MSEARCH_DASHBOARD", "false"))
    url = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen([BIN / "msearch", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        serve_up = wait_for_health(url, server)
        t1 = time.perf_counter()
        index = subprocess.run([BIN / "msearch", "index", str(sample), "--json"], env=env, capture_output=True,
                               text=True, check=True)
        index_wall = time.perf_counter() - t1
        summary = json.loads(index.stdout)
        latencies = []
        with httpx.Client(base_url=url, timeout=60) as client:
            client.post("/api/v1/search", json={"query": "warm up"}).raise_for_status()
            for i in range(args.queries):
                start = time.perf_counter()
                client.post("/api/v1/search", json={"query": QUERIES[i % len(QUERIES)], "top_k": 10}).raise_for_status()
                latencies.append((time.perf_counter() - start) * 1000)
    finally:
        server.terminate()
        server.wait(timeout=120)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.node()} {os.cpu_count()} cpus",
        "serve_startup_s": round(serve_up, 1),
        "index_files": summary["seen"], "index_indexed": summary["indexed"],
        "index_wall_s": round(index_wall, 1), "index_job_s": summary["seconds"],
        "search_queries": len(latencies),
        "search_p50_ms": round(statistics.median(latencies), 1),
        "search_p90_ms": round(percentile(latencies, 90), 1),
        "search_p99_ms": round(percentile(latencies, 99), 1),
    }
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
