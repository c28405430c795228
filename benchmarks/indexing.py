"""Indexing efficiency: end-to-end files/s of `msearch index` (Ray Data pipeline, local Ray) on
generated images and text files, against model-only throughput of the same models on the same
decoded inputs in one process: one stream on all the cores and two streams of half the cores each
(`MSEARCH_INDEX__EMBED_STREAMS`), the faster of the two being the baseline. Prints a table and
writes JSON.

    .venv/bin/python benchmarks/indexing.py [--images 300] [--texts 200] [--kept [--cpu]] [--out results.json]

``--kept``: instead of a one-shot `msearch index` (which starts Ray and loads the models for
itself), a long-lived driver that has already run once, as `msearch watch`, the control API's
queue or a job on a running cluster: its kept embedding actors have the models loaded, and
the timed run is its second. With ``--cpu`` (Linux) it also prints the CPU seconds of that run's
processes by role (as `benchmarks/plumbing.py --cpu`) and the machine's busy and idle CPU.

Images are embedded with the ViT-B/32 CLIP architecture (openai/clip-vit-base-patch32's shapes)
with random weights, built on the fly as the tests build their tiny models: no CLIP weights
exist offline, and the compute is the same. Texts use the packaged all-MiniLM-L6-v2.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import report, run_info, time_batches

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ("harbour lighthouse budget rain valley camera river storm archive footage interview "
         "bridge garden music ferry timetable editor scene").split()


# A long-lived driver: one run on a small folder (it starts the kept embedders), then the timed one.
KEPT_DRIVER = """
import json, os, sys, threading, time
from msearch.settings import load_settings
from pipelines.cluster import connect
from pipelines.index import run_index
settings = load_settings()
connect(settings)
run_index(settings, [sys.argv[1]], progress=False, keep_actors=True)
sampler = None
if len(sys.argv) > 3:  # --cpu: every process of this driver's local Ray, read from /proc
    sys.path.insert(0, sys.argv[3])
    from common import CpuByRole, machine_cpu

    sampler, done = CpuByRole(os.getpid()), threading.Event()
    sampler.sample()
    before, machine = dict(sampler.cpu), machine_cpu()
    def sample():
        while not done.wait(0.5):
            sampler.sample()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
start = time.perf_counter()
summary = run_index(settings, [sys.argv[2]], progress=False, keep_actors=True)
summary["wall_s"] = time.perf_counter() - start
if sampler:
    done.set(), thread.join()
    sampler.sample()
    busy, idle = (a - b for a, b in zip(machine_cpu(), machine))
    # Per process, so that a worker that takes on a task's name later counts under that role.
    summary["cpu_seconds_by_role"] = sampler.totals({pid: cpu - before.get(pid, 0.0)
                                                     for pid, cpu in sampler.cpu.items()})
    summary["machine_busy_idle_s"] = [round(busy, 2), round(idle, 2)]
print(json.dumps(summary))
"""


def make_corpus(root: Path, images: int, texts: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "texts").mkdir()
    for i in range(images):
        base = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((640, 480), Image.Resampling.BICUBIC)
        img.save(root / "images" / f"img{i:04d}.jpg", quality=88)
    for i in range(texts):
        words = rng.choice(WORDS, 120)
        (root / "texts" / f"note{i:04d}.txt").write_text(" ".join(words) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--kept", action="store_true", help="the second run of a driver that keeps its embedders")
    parser.add_argument("--cpu", action="store_true",
                        help="with --kept: CPU seconds of the second run by role, and the machine's busy and idle CPU")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from tiny_models import build_tiny_clip

    from msearch.embed.infinity import InfinityClip, InfinityText
    from msearch.embed.resolve import resolve_model
    from msearch.media.image import prepare_for
    from msearch.media.text import chunk_text, read_text
    from msearch.settings import Settings
    from pipelines.stages import torch_threads

    out = run_info()
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        corpus = td / "corpus"
        make_corpus(corpus, args.images, args.texts)
        clip_dir = build_tiny_clip(str(td / "clip"), full_size=True)
        minilm = "sentence-transformers/all-MiniLM-L6-v2"

        def models_settings(streams: int) -> Settings:
            return Settings(data_dir=td / "data", models={"clip": clip_dir, "text": minilm, "clap": "none",
                                                          "whisper": "none", "colpali": "none", "ocr": "none"},
                            index={"embed_batch_size": args.batch, "embed_threads": 0, "embed_streams": streams})

        def models_alone(streams: int) -> tuple[float, float, float]:
            """Seconds of CLIP, of MiniLM and in all: one process, nothing else running, ``streams``
            forward passes at once sharing the cores (``EMBED_STREAMS``)."""
            settings = models_settings(streams)
            torch_threads(settings)  # as an embedding actor sets them
            clip = InfinityClip(clip_dir, clip_dir, settings)
            clip_s = time_batches(clip.embed_images, pictures, args.batch)
            clip.close()
            text = InfinityText(minilm, resolve_model("text", minilm, "MSEARCH_MODELS__TEXT"), settings)
            text_s = time_batches(text.embed_texts, chunks, args.batch)
            text.close()
            return clip_s, text_s, clip_s + text_s

        # -- model only: the same decoded inputs, one process ------------------------------
        settings = models_settings(1)
        pictures = [prepare_for(p.read_bytes(), settings).to_pil() for p in sorted((corpus / "images").iterdir())]
        chunks = [c.text for p in sorted((corpus / "texts").iterdir())
                  for c in chunk_text(read_text(p, 10**7)[0], settings.text.chunk_chars, settings.text.chunk_overlap)]
        # The models alone at their best on this machine: one stream on all the cores, and two
        # streams of half the cores each (the pipeline's default on a CPU), whichever is faster,
        # whatever MSEARCH_INDEX__* the run below is given.
        alone = {streams: models_alone(streams) for streams in (1, 2)}
        clip_s, text_s, model_only_s = min(alone.values(), key=lambda t: t[2])

        # -- end to end: msearch index through a local Ray ---------------------------------
        # The index settings of the environment (MSEARCH_INDEX__*) pass through, for sweeps.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MSEARCH_") or k.startswith("MSEARCH_INDEX__")}
        env.update(MSEARCH_DATA_DIR=str(td / "data"), MSEARCH_MODELS__CLIP=clip_dir, MSEARCH_MODELS__TEXT=minilm,
                   MSEARCH_MODELS__CLAP="none", MSEARCH_MODELS__WHISPER="none", MSEARCH_MODELS__COLPALI="none",
                   MSEARCH_MODELS__OCR="none", MSEARCH_DASHBOARD="false",
                   MSEARCH_INDEX__EMBED_BATCH_SIZE=str(args.batch))
        if args.kept:
            from PIL import Image

            warm = td / "warm"  # contents of its own (the corpus's would be shared, not embedded)
            warm.mkdir()
            Image.new("RGB", (640, 480), (200, 30, 30)).save(warm / "red.jpg")
            (warm / "note.txt").write_text("a warm-up note about nothing in the corpus\n")
            command = [sys.executable, "-c", KEPT_DRIVER, str(warm), str(corpus),
                       *([str(Path(__file__).parent)] if args.cpu else [])]
        else:
            command = [str(ROOT / ".venv/bin/msearch"), "index", str(corpus), "--json"]
        start = time.perf_counter()
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600, cwd=ROOT)
        wall_s = time.perf_counter() - start
        if run.returncode != 0:
            print(run.stderr[-3000:], file=sys.stderr)
            return 1
        summary = json.loads(run.stdout)
        if args.kept:
            wall_s = summary["wall_s"]  # the second run alone
        files = args.images + args.texts
        out["indexing"] = {
            "driver": "second run, kept embedders" if args.kept else "one-shot msearch index", "files": files, "indexed": summary["indexed"], "units": summary["units"],
            "model_only_s": round(model_only_s, 2), "model_only_files_per_s": round(files / model_only_s, 2),
            "model_only_s_by_streams": {n: round(t[2], 2) for n, t in alone.items()},
            "clip_model_only_img_per_s": round(len(pictures) / clip_s, 2),
            "text_model_only_chunks_per_s": round(len(chunks) / text_s, 2),
            "end_to_end_wall_s": round(wall_s, 2), "job_s": summary["seconds"],
            "end_to_end_files_per_s": round(files / wall_s, 2), "job_files_per_s": round(files / summary["seconds"], 2),
            "ratio_wall": round(model_only_s / wall_s, 3), "ratio_job": round(model_only_s / summary["seconds"], 3),
            # From the run itself: list, plan, hash, claim, write, optimize, reconcile and the
            # pipeline's wall time; decode and embed summed over units (they overlap).
            "stage_seconds": summary["stage_seconds"],
        }
        for key in ("cpu_seconds_by_role", "machine_busy_idle_s"):
            if key in summary:
                out["indexing"][key] = summary[key]
    r = out["indexing"]
    report(out, [
        ("model only, files per s (CLIP + MiniLM; the faster of the two below)", r['model_only_files_per_s']),
        *[(f"model only, seconds, {n} stream{'s' if n > 1 else ''}", v)
          for n, v in r["model_only_s_by_streams"].items()],
        ("msearch index, files per s (wall)", r['end_to_end_files_per_s']),
        ("msearch index, files per s (job)", r['job_files_per_s']),
        ("ratio end to end / model only (wall)", r['ratio_wall']),
        ("ratio end to end / model only (job)", r['ratio_job']),
        *[(f"stage seconds: {name}", v) for name, v in r["stage_seconds"].items()],
        *[(f"CPU s: {role}", v) for role, v in r.get("cpu_seconds_by_role", {}).items()],
        *([("the machine's busy / idle CPU s", "{} / {}".format(*r["machine_busy_idle_s"]))]
          if "machine_busy_idle_s" in r else []),
    ], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
