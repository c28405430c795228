"""The plumbing ceiling: `msearch index` with free (fake) models against the decode work alone.

Makes a deterministic corpus (by default 3,000 JPEGs of 320x240 and 2,000 texts of ~120 words),
then, in one run:

* decode only: the same files listed, hashed, decoded, thumbnailed and cut into units in this
  process, one after another: no Ray, no stores, no models;
* end to end: `msearch index` on a fresh data dir with `MSEARCH_MODELS__CLIP=fake`,
  `__TEXT=fake` and the other roles `none`, so that only msearch's own work counts.

It prints files/s of both, their ratio, the store bookkeeping per 1,000 files (the run's own
claim + write seconds) and the run's `stage_seconds`.

    .venv/bin/python benchmarks/plumbing.py [--images 3000] [--texts 2000] [--out results.json]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import msearch_env, report, run_info

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = ("harbour lighthouse budget rain valley camera river storm archive footage interview bridge garden "
         "music ferry timetable editor scene winter market station orchard letter museum").split()
FAKE_MODELS = {"clip": "fake", "text": "fake", "clap": "none", "whisper": "none", "colpali": "none", "ocr": "none"}


def make_corpus(root: Path, images: int, texts: int, seed: int = 0) -> None:
    """``images`` JPEGs of 320x240 (smooth random colours) and ``texts`` notes of ~120 words."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(images):
        folder = root / "images" / f"{i // 500:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(base).resize((320, 240), Image.Resampling.BICUBIC).save(folder / f"img{i:05d}.jpg", quality=88)
    for i in range(texts):
        folder = root / "texts" / f"{i // 500:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"note{i:05d}.txt").write_text(" ".join(rng.choice(WORDS, 120)) + "\n")


def decode_only(corpus: Path, data_dir: Path) -> tuple[float, int]:
    """List, hash, decode and cut every file in this process; returns (seconds, units)."""
    from msearch.files import hash_entry, walk
    from msearch.settings import Settings
    from msearch.units import decode_file

    settings = Settings(data_dir=data_dir, models=FAKE_MODELS)
    models = {"clip": "fake-clip", "text": "fake-text"}
    start = time.perf_counter()
    units = 0
    for entry in walk([corpus]):
        row = {**hash_entry(entry, settings.text.suffixes), "run_id": "decode-only"}
        for chunk in decode_file(row, settings, models):
            units += len(chunk)
    return time.perf_counter() - start, units


def index(corpus: Path, data_dir: Path, extra_env: dict | None = None) -> tuple[float, dict]:
    env = {**msearch_env(data_dir, FAKE_MODELS), **(extra_env or {})}
    start = time.perf_counter()
    run = subprocess.run([str(ROOT / ".venv/bin/msearch"), "index", str(corpus), "--json"], env=env,
                         capture_output=True, text=True, timeout=7200)
    wall = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"msearch index failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return wall, json.loads(run.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    out = run_info()
    files = args.images + args.texts
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        corpus = td / "corpus"
        make_corpus(corpus, args.images, args.texts)
        decode_s, units = decode_only(corpus, td / "scratch")
        wall, summary = index(corpus, td / "data")
        stages = summary["stage_seconds"]
        bookkeeping = sum(stages.get(k, 0.0) for k in ("claim", "write"))
        bookkeeping_cpu = sum(stages.get(k, 0.0) for k in ("claim_cpu", "write_cpu"))
        out["plumbing"] = {
            "files": files, "units_decode_only": units, "indexed": summary["indexed"], "units": summary["units"],
            "failed": len(summary["failed"]), "decode_only_s": round(decode_s, 2),
            "decode_only_files_per_s": round(files / decode_s, 1),
            "end_to_end_wall_s": round(wall, 2), "job_s": summary["seconds"],
            "end_to_end_files_per_s": round(files / wall, 1), "job_files_per_s": round(files / summary["seconds"], 1),
            "ratio_wall": round(decode_s / wall, 3), "ratio_job": round(decode_s / summary["seconds"], 3),
            "bookkeeping_s_per_1000_files": round(bookkeeping * 1000 / files, 3),
            "bookkeeping_cpu_s_per_1000_files": round(bookkeeping_cpu * 1000 / files, 3),
            "stage_seconds": stages,
        }
    r = out["plumbing"]
    report(out, [
        ("decode only, files per s", r["decode_only_files_per_s"]),
        ("msearch index, files per s (wall)", r["end_to_end_files_per_s"]),
        ("msearch index, files per s (job)", r["job_files_per_s"]),
        ("ratio end to end / decode only (wall)", r["ratio_wall"]),
        ("ratio end to end / decode only (job)", r["ratio_job"]),
        ("store bookkeeping s per 1,000 files (claim + write)", r["bookkeeping_s_per_1000_files"]),
        ("store bookkeeping CPU s per 1,000 files", r["bookkeeping_cpu_s_per_1000_files"]),
        *[(f"stage seconds: {name}", v) for name, v in r["stage_seconds"].items()],
    ], args.out)
    return 0 if r["indexed"] == files else 1


if __name__ == "__main__":
    sys.exit(main())
