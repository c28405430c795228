"""How long `msearch search` takes as a user runs it: cold (no server: the command opens the data
dir itself and loads only the query model it needs) and with `msearch serve` running (the
command asks its HTTP API). Goals on a 2-core machine: ≤ 2 s cold for a text query on an index
of text, ≤ 0.3 s with the server.

    .venv/bin/python benchmarks/cli_search.py [--docs 200] [--runs 5] [--out results.json]

The index: generated English and Chinese notes, indexed with the default text model (and no
picture, sound or page models). Each figure is the median wall time of ``--runs`` commands.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import msearch_env, report, run_info, start_serve

ROOT = Path(__file__).resolve().parent.parent
MSEARCH = str(ROOT / ".venv" / "bin" / "msearch")
MODELS = {"clip": "none", "clap": "none", "whisper": "none", "colpali": "none", "ocr": "none"}
NOTES = ["the harbour master checked the lighthouse lamp and the pier timber", "预算会议讨论了明年的旅行费用和市场推广",
         "interview transcript: the editor talks about the budget for the documentary",
         "菜谱：番茄炒蛋需要新鲜的鸡蛋和熟透的番茄", "the ferry timetable changes in winter; the last boat leaves at six"]
QUERIES = ["灯塔的灯", "travel costs next year", "how to cook eggs with tomatoes"]


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--port", type=int, default=8797)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = run_info()
    with tempfile.TemporaryDirectory(prefix="msearch-cli-") as td:
        td = Path(td)
        docs = td / "notes"
        docs.mkdir()
        for i in range(args.docs):
            (docs / f"note{i:04d}.txt").write_text(f"{NOTES[i % len(NOTES)]} ({i})\n")
        env = msearch_env(td / "data", MODELS)
        subprocess.run([MSEARCH, "index", str(docs), "--json"], env=env, check=True, capture_output=True, timeout=1200)
        cold = [timed([MSEARCH, "search", QUERIES[i % len(QUERIES)], "--top-k", "5"], env) for i in range(args.runs)]
        url, server = start_serve(env, args.port, td / "serve.log")
        try:
            timed([MSEARCH, "search", "warm up"], env)
            served = [timed([MSEARCH, "search", QUERIES[i % len(QUERIES)], "--top-k", "5"], env)
                      for i in range(args.runs)]
        finally:
            server.terminate()
            server.wait(timeout=180)
    out["cli_search"] = {"docs": args.docs, "runs": args.runs, "cold_s": [round(x, 2) for x in cold],
                         "served_s": [round(x, 3) for x in served],
                         "cold_median_s": round(statistics.median(cold), 2),
                         "served_median_s": round(statistics.median(served), 3)}
    r = out["cli_search"]
    report(out, [("msearch search, no server: median s (goal <= 2)", r["cold_median_s"]),
                 ("msearch search, msearch serve running: median s (goal <= 0.3)", r["served_median_s"])], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
