"""Search latency over HTTP at 1, 4 and 16 concurrent clients, against the bare in-process path
(query embedding + store query, no Serve, no HTTP) on the same index, in one run.

    .venv/bin/python benchmarks/search_latency.py [--queries 200] [--out results.json]

The sample folder (scripts/make_sample.py) is indexed through `msearch serve`; then each client
count sends its queries; then the server stops and the same queries run in-process against the
same data dir. Goals: HTTP p50 <= 1.3x the bare path at 1 client; p99 <= 3x p50 at 16 clients,
with zero errors.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from common import msearch_env, report, run_info, start_serve
from foundation import QUERIES, percentile

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def stats(latencies: list[float]) -> dict:
    return {"n": len(latencies), "p50_ms": round(statistics.median(latencies), 1),
            "p99_ms": round(percentile(latencies, 99), 1)}


def http_round(url: str, clients: int, queries: int, parts: dict | None = None) -> tuple[list[float], int]:
    """``parts``, when given, collects the server's own Server-Timing figures (ms) per part."""
    latencies: list[float] = []
    errors = 0

    def one(i: int, client: httpx.Client) -> None:
        nonlocal errors
        start = time.perf_counter()
        try:
            r = client.post("/api/v1/search", json={"query": QUERIES[i % len(QUERIES)], "top_k": 10})
            if r.status_code != 200:
                errors += 1
            elif parts is not None and "server-timing" in r.headers:
                for part in r.headers["server-timing"].split(", "):
                    name, dur = part.split(";dur=")
                    parts.setdefault(name, []).append(float(dur))
        except httpx.HTTPError:
            errors += 1
        latencies.append((time.perf_counter() - start) * 1000)

    with httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=clients)) as client:
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(lambda i: one(i, client), range(queries)))
    return latencies, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = run_info()
    tmp = Path(tempfile.mkdtemp(prefix="msearch-latency-"))
    sample = tmp / "sample"
    subprocess.run([sys.executable, ROOT / "scripts" / "make_sample.py", sample], check=True, capture_output=True)
    env = msearch_env(tmp / "data", port=str(args.port))
    url, server = start_serve(env, args.port, tmp / "serve.log")
    try:
        subprocess.run([BIN / "msearch", "index", str(sample), "--json"], env=env, capture_output=True, check=True)
        http_round(url, 1, 5)  # warm-up
        out["http"] = {}
        for clients in (1, 4, 16):
            parts: dict[str, list[float]] = {}
            latencies, errors = http_round(url, clients, args.queries, parts)
            out["http"][clients] = {**stats(latencies), "errors": errors}
            if parts:  # where the server says the time went; the rest is the proxy and HTTP
                split = {name: round(statistics.median(v), 1) for name, v in parts.items()}
                split["outside the handler"] = round(out["http"][clients]["p50_ms"] - split["total"], 1)
                out["http"][clients]["server_p50_ms"] = split
    finally:
        server.terminate()
        server.wait(timeout=120)

    from msearch.embed import build_embedder
    from msearch.library import Library
    from msearch.search import SearchService
    from msearch.settings import Settings

    settings = Settings(data_dir=tmp / "data")
    lib = Library(settings)
    text = build_embedder("text", settings)
    try:
        service = SearchService({"text": text}, lib, settings)
        service.search_text("warm up")
        bare = []
        for i in range(args.queries):
            start = time.perf_counter()
            service.search_text(QUERIES[i % len(QUERIES)], top_k=10)
            bare.append((time.perf_counter() - start) * 1000)
    finally:
        text.close()
        lib.close()
    out["bare"] = stats(bare)
    h1, h16 = out["http"][1], out["http"][16]
    out["ratio_p50_http1_over_bare"] = round(h1["p50_ms"] / out["bare"]["p50_ms"], 2)
    out["ratio_p99_over_p50_at_16"] = round(h16["p99_ms"] / h16["p50_ms"], 2)
    report(out, [
        ("bare path p50 ms", out["bare"]["p50_ms"]),
        ("HTTP 1 client p50 / p99 ms", f"{h1['p50_ms']} / {h1['p99_ms']}"),
        ("HTTP 4 clients p50 / p99 ms", f"{out['http'][4]['p50_ms']} / {out['http'][4]['p99_ms']}"),
        ("HTTP 16 clients p50 / p99 ms", f"{h16['p50_ms']} / {h16['p99_ms']}"),
        ("errors (1 / 4 / 16 clients)", "/".join(str(out["http"][c]["errors"]) for c in (1, 4, 16))),
        ("p50 HTTP 1 client / bare (goal <= 1.3)", out["ratio_p50_http1_over_bare"]),
        ("p99 / p50 at 16 clients (goal <= 3)", out["ratio_p99_over_p50_at_16"]),
        *[(f"1 client, server p50 {name} ms", v) for name, v in h1.get("server_p50_ms", {}).items()],
    ], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
