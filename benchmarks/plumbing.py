"""The plumbing ceiling: `msearch index` with free (fake) models against the decode work alone.

Makes a deterministic corpus (by default 3,000 JPEGs of 320x240 and 2,000 texts of ~120 words),
then, in one run:

* decode only: the same files listed, hashed, decoded, thumbnailed and cut into units in this
  process, one after another: no Ray, no stores, no models;
* end to end: `msearch index` on a fresh data dir with `MSEARCH_MODELS__CLIP=fake`,
  `__TEXT=fake` and the other roles `none`, so that only msearch's own work counts.

It prints files/s of both, their ratio, the store bookkeeping per 1,000 files (the run's own
claim + write seconds) and the run's `stage_seconds`. With ``--cpu`` (Linux) it also prints where
the machine's CPU went during `msearch index`: the CPU seconds of its processes by role (Ray's
task workers, the embedding actor, the store owner, the driver, Ray Data's own actors, Ray's
processes), read from /proc every half second (a process that ends loses its last half second),
and of that the system CPU and the minor page faults, by role.

With ``--embed-side N`` both sides hand pictures to the model at an N-pixel side instead of the
default (`MSEARCH_IMAGE__EMBED_SIDE`): a diagnostic of what moving the pixels costs, not a setting
to compare against the goal.

With ``--margin`` it also runs both on a corpus twice as large (a fresh data dir) and prints what
the second half of its files cost: the job's seconds per 1,000 more files, the ratio of decode-only
to job for them, and the seconds of the first job that do not grow with the files (starting the
pipeline's processes, Ray Data's actors, the last commit).

    .venv/bin/python benchmarks/plumbing.py [--images 3000] [--texts 2000] [--cpu] [--margin] [--embed-side N]
                                            [--out results.json]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import CpuByRole, msearch_env, report, run_info

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


def decode_only(corpus: Path, data_dir: Path, embed_side: int | None = None) -> tuple[float, int]:
    """List, hash, decode and cut every file in this process; returns (seconds, units)."""
    from msearch.files import hash_entry, walk
    from msearch.settings import Settings
    from msearch.units import decode_file

    settings = Settings(data_dir=data_dir, models=FAKE_MODELS, **({"image": {"embed_side": embed_side}}
                                                                  if embed_side else {}))
    models = {"clip": "fake-clip", "text": "fake-text"}
    start = time.perf_counter()
    units = 0
    for entry in walk([corpus]):
        row = {**hash_entry(entry, settings.text.suffixes), "run_id": "decode-only"}
        for chunk in decode_file(row, settings, models):
            units += len(chunk)
    return time.perf_counter() - start, units


def index(corpus: Path, data_dir: Path, extra_env: dict | None = None, cpu: dict | None = None
          ) -> tuple[float, dict]:
    """`msearch index` on ``corpus``; returns its wall seconds and summary. ``cpu``: filled with
    the CPU seconds of its processes by role (``cpu``), their system CPU (``system``) and minor
    page faults (``faults``)."""
    env = {**msearch_env(data_dir, FAKE_MODELS), **(extra_env or {})}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        run = subprocess.Popen([str(ROOT / ".venv/bin/msearch"), "index", str(corpus), "--json"], env=env,
                               stdout=out, stderr=err, text=True)
        sampler = CpuByRole(run.pid) if cpu is not None else None
        while run.poll() is None:
            if sampler:
                sampler.sample()
            time.sleep(0.5)
        wall = time.perf_counter() - start
        out.seek(0), err.seek(0)
        if run.returncode != 0:
            sys.exit(f"msearch index failed ({run.returncode}):\n{err.read()[-3000:]}")
        if sampler:
            cpu.update(cpu=sampler.totals(sampler.cpu), system=sampler.totals(sampler.system),
                       faults={role: int(n) for role, n in sampler.totals(sampler.faults).items()})
        return wall, json.loads(out.read())


def margin(td: Path, images: int, texts: int, decode_s: float, job_s: float, extra_env: dict,
           embed_side: int | None) -> dict:
    """The same on ``images`` + ``texts`` files (twice the first corpus): what the added files
    cost, decoded alone and in `msearch index`, and the part of the first job that does not grow
    with the files."""
    corpus = td / "corpus2"
    make_corpus(corpus, images, texts)
    decode2, _ = decode_only(corpus, td / "scratch2", embed_side)
    _, summary = index(corpus, td / "data2", extra_env)
    extra = (images + texts) / 2
    per_file = (summary["seconds"] - job_s) / extra
    return {"files": images + texts, "indexed": summary["indexed"], "decode_only_s": round(decode2, 2),
            "job_s": summary["seconds"], "job_s_per_1000_files": round(per_file * 1000, 3),
            "ratio_job": round((decode2 - decode_s) / (summary["seconds"] - job_s), 3),
            "fixed_job_s": round(job_s - per_file * extra, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--cpu", action="store_true", help="CPU seconds of msearch index's processes by role")
    parser.add_argument("--margin", action="store_true",
                        help="also a corpus twice as large: what the second half of its files costs")
    parser.add_argument("--embed-side", type=int, default=None,
                        help="diagnostic: the pictures' side handed to the model (default: msearch's)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    out = run_info()
    files = args.images + args.texts
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        corpus = td / "corpus"
        make_corpus(corpus, args.images, args.texts)
        decode_s, units = decode_only(corpus, td / "scratch", args.embed_side)
        cpu = {} if args.cpu else None
        extra = {"MSEARCH_IMAGE__EMBED_SIDE": str(args.embed_side)} if args.embed_side else {}
        wall, summary = index(corpus, td / "data", extra, cpu=cpu)
        stages = summary["stage_seconds"]
        bookkeeping = sum(stages.get(k, 0.0) for k in ("claim", "write"))
        bookkeeping_cpu = sum(stages.get(k, 0.0) for k in ("claim_cpu", "write_cpu"))
        out["plumbing"] = {
            "files": files, "embed_side": args.embed_side, "units_decode_only": units, "indexed": summary["indexed"],
            "units": summary["units"],
            "failed": len(summary["failed"]), "decode_only_s": round(decode_s, 2),
            "decode_only_files_per_s": round(files / decode_s, 1),
            "end_to_end_wall_s": round(wall, 2), "job_s": summary["seconds"],
            "end_to_end_files_per_s": round(files / wall, 1), "job_files_per_s": round(files / summary["seconds"], 1),
            "ratio_wall": round(decode_s / wall, 3), "ratio_job": round(decode_s / summary["seconds"], 3),
            "bookkeeping_s_per_1000_files": round(bookkeeping * 1000 / files, 3),
            "bookkeeping_cpu_s_per_1000_files": round(bookkeeping_cpu * 1000 / files, 3),
            "stage_seconds": stages,
        }
        if cpu is not None:
            out["plumbing"]["cpu_seconds_by_role"] = cpu["cpu"]
            out["plumbing"]["system_cpu_seconds_by_role"] = cpu["system"]
            out["plumbing"]["minor_page_faults_by_role"] = cpu["faults"]
            out["plumbing"]["cpu_seconds_available"] = round(wall * len(os.sched_getaffinity(0)), 1)
        if args.margin:
            out["plumbing"]["margin"] = margin(td, args.images * 2, args.texts * 2, decode_s, summary["seconds"],
                                               extra, args.embed_side)
    r = out["plumbing"]
    m = r.get("margin", {})
    report(out, [
        ("decode only, files per s", r["decode_only_files_per_s"]),
        ("msearch index, files per s (wall)", r["end_to_end_files_per_s"]),
        ("msearch index, files per s (job)", r["job_files_per_s"]),
        ("ratio end to end / decode only (wall)", r["ratio_wall"]),
        ("ratio end to end / decode only (job)", r["ratio_job"]),
        ("store bookkeeping s per 1,000 files (claim + write)", r["bookkeeping_s_per_1000_files"]),
        ("store bookkeeping CPU s per 1,000 files", r["bookkeeping_cpu_s_per_1000_files"]),
        *[(f"stage seconds: {name}", v) for name, v in r["stage_seconds"].items()],
        *[(f"CPU s: {role}", v) for role, v in r.get("cpu_seconds_by_role", {}).items()],
        *[(f"system CPU s: {role}", v) for role, v in r.get("system_cpu_seconds_by_role", {}).items()],
        *[(f"minor page faults: {role}", v) for role, v in r.get("minor_page_faults_by_role", {}).items()],
        *([("CPU s the machine had (cores x wall)", r["cpu_seconds_available"])] if args.cpu else []),
        *([("twice the files: decode only s", m["decode_only_s"]), ("twice the files: msearch index job s", m["job_s"]),
           ("the second half's job s per 1,000 files", m["job_s_per_1000_files"]),
           ("ratio at the margin (the second half: decode only / job)", m["ratio_job"]),
           ("job s that do not grow with the files (job - margin x files)", m["fixed_job_s"])] if m else []),
    ], args.out)
    return 0 if r["indexed"] == files and m.get("indexed", 2 * files) == 2 * files else 1


if __name__ == "__main__":
    sys.exit(main())
