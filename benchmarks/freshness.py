"""Freshness: how long a small run takes in a long-lived driver, as `msearch watch` and the
control API's queue make one for each batch of changed files.

One driver connects to a local Ray, indexes a folder of a few files, then adds one note and
indexes again, ``--runs`` times. Each run prints its seconds and the run's own work (hash,
claim, decode, embed, write, as the run times them); the rest is what a run costs whatever its
size. Runs keep their embedding actors, as watch and the queue do (``--pool``: an actor pool
per run, as before they were kept). ``--models real`` uses the ViT-B/32 CLIP architecture with random weights (built on the
fly, as in `indexing.py`) and the packaged all-MiniLM-L6-v2 through infinity-emb; ``fake`` the
free models. ``--speech``: Whisper (the packaged ``base``) is on, as it is by default, and the
new files alternate between a note and a spoken clip (espeak-ng).

    .venv/bin/python benchmarks/freshness.py [--models fake|real] [--speech] [--pool] [--runs 4] [--out results.json]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import report, run_info

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
WORK = ("hash", "claim", "decode", "embed", "write")


def speak(path: Path, text: str) -> None:
    """``text`` spoken by espeak-ng into a WAV file."""
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", choices=("fake", "real"), default="fake")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--pool", action="store_true", help="an embedding actor pool per run (not kept)")
    parser.add_argument("--speech", action="store_true", help="Whisper on; every other new file is a spoken clip")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    out = run_info()
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        models = {"clap": "none", "whisper": "base" if args.speech else "none", "colpali": "none", "ocr": "none"}
        if args.models == "real":
            from tiny_models import build_tiny_clip

            models.update(clip=build_tiny_clip(str(td / "clip"), full_size=True),
                          text="sentence-transformers/all-MiniLM-L6-v2")
        else:
            models.update(clip="fake", text="fake")
        os.environ.update({f"MSEARCH_MODELS__{role.upper()}": spec for role, spec in models.items()})
        os.environ.update(MSEARCH_DATA_DIR=str(td / "data"), MSEARCH_DASHBOARD="false")

        from PIL import Image

        from msearch.settings import load_settings
        from pipelines.cluster import connect
        from pipelines.index import run_index

        folder = td / "folder"
        folder.mkdir()
        for i in range(3):
            Image.new("RGB", (640, 480), (60 * i, 120, 40)).save(folder / f"shot{i}.jpg")
        (folder / "note.txt").write_text("the harbour at dawn, a ferry leaving in the rain")
        settings = load_settings()
        start = time.perf_counter()
        connect(settings)
        connect_s = time.perf_counter() - start
        runs = []
        for i in range(args.runs + 1):  # the first run indexes the folder; each later one, one new note
            if i and args.speech and i % 2 == 0:
                speak(folder / f"clip{i}.wav", f"clip {i}: the ferry timetable changed for winter")
            elif i:
                (folder / f"note{i}.txt").write_text(f"note {i}: the ferry timetable changed for winter")
            start = time.perf_counter()
            summary = run_index(settings, [str(folder)], progress=False, keep_actors=not args.pool)
            seconds = time.perf_counter() - start
            work = sum(summary["stage_seconds"].get(k, 0.0) for k in WORK)
            new = "clip" if args.speech and i and i % 2 == 0 else "note"
            runs.append({"seconds": round(seconds, 2), "indexed": summary["indexed"], "work_s": round(work, 3),
                         "new": new if i else None})
            print(f"run {i}: {seconds:.2f} s, {summary['indexed']} indexed ({new if i else 'the folder'}), "
                  f"the run's own work {work:.2f} s", flush=True)
        out["freshness"] = {
            "models": args.models, "speech": args.speech, "embedders": "a pool per run" if args.pool else "kept",
            "connect_s": round(connect_s, 2), "runs": runs,
        }
        for kind in ("note", "clip"):
            later = [r for r in runs[1:] if r["new"] == kind]
            if later:
                out["freshness"][f"one_new_{kind}_median_s"] = round(statistics.median(r["seconds"] for r in later), 2)
                out["freshness"][f"one_new_{kind}_work_median_s"] = round(statistics.median(r["work_s"] for r in later), 3)
    r = out["freshness"]
    report(out, [
        ("models", r["models"] + (", Whisper base" if r["speech"] else "")),
        ("embedding actors", r["embedders"]),
        ("starting Ray and the store owner, s", r["connect_s"]),
        ("first run (4 files), s", r["runs"][0]["seconds"]),
        *[(f"a run for one new {kind}, median s{part}", r[f"one_new_{kind}{key}_median_s"])
          for kind in ("note", "clip") if f"one_new_{kind}_median_s" in r
          for part, key in (("", ""), (": the run's own work", "_work"))],
    ], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
