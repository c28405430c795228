"""GPU run: real-size CLIP ViT-B/32 (random weights) through msearch's own decode and embed code,
images/s end to end against the model alone on the same batch. No Ray, no network.

    python benchmarks/gpu_clip.py [--images 4000] [--batch 256] [--size full|tiny|cheap] [--json out.json]

* model only: the CLIP image tower in transformers, on the device, fp16 on a GPU, fed pixel
  tensors already on the device (the most the model can do);
* embed only: msearch's embedder (infinity-emb, as the indexing actors load it) on pictures
  already decoded, so its own preprocessing is in;
* decode only: msearch's image decode (``prepare_for``: read, shrink, thumbnail) over a process
  pool of every core, as the decode tasks of the pipeline do;
* end to end: files to vectors, decode pool feeding the embedder. Goal: ≥ 0.5 of model only.

The pictures are generated 1280×720 JPEGs. The weights are random with ViT-B/32's shapes (built on
the fly as the tests build their tiny models): no CLIP weights exist offline; the compute is the
same. ``--size tiny`` runs the same code on the tests' tiny CLIP (a check on a CPU). ``--size cheap``
takes ViT-B/32's 224-px pictures and image processor on the tiny network: there, on a CPU, embed
only is nearly all msearch's embedder's own work per picture (what a fast GPU leaves).

On a GPU machine that has torch and transformers but not this project's other packages (or other
versions of them), run from the repository root with the wheels ``scripts/gpu-wheels.sh`` puts
in ``.whl/`` (Python 3.12 there):

    python3 -m venv --system-site-packages /tmp/v && /tmp/v/bin/pip install -q --no-index --no-deps .whl/*.whl
    PYTHONPATH=. /tmp/v/bin/python benchmarks/gpu_clip.py --json $OUT/gpu_clip.json
"""

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import report, run_info, time_batches  # noqa: E402

SIDE = (1280, 720)


def make_picture(args: tuple[Path, int]) -> None:
    import numpy as np
    from PIL import Image

    path, seed = args
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (9, 16, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(base).resize(SIDE, Image.Resampling.BICUBIC), dtype=np.int16)
    img = np.clip(img + rng.integers(-12, 12, img.shape), 0, 255).astype(np.uint8)  # texture, as photos have
    Image.fromarray(img).save(path, quality=88)


_SETTINGS = None


def decode(path: str):
    """msearch's decode of one picture file: what the embedder gets (the thumbnail is made too)."""
    from msearch.media.image import prepare_for

    prepared = prepare_for(Path(path).read_bytes(), _SETTINGS)
    return prepared.rgb, prepared.width, prepared.height


def _init(settings) -> None:
    global _SETTINGS
    _SETTINGS = settings
    os.environ["OMP_NUM_THREADS"] = "1"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", choices=("full", "tiny", "cheap"), default="full")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch
    from tiny_models import build_tiny_clip

    from msearch.embed import build_embedder
    from msearch.embed.infinity import resolve_device
    from msearch.media.image import rgb_image
    from msearch.settings import Settings

    device = resolve_device(args.device)
    out = {**run_info(), "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
           "torch": torch.__version__, "size": args.size, "images": args.images, "batch": args.batch,
           "workers": args.workers}
    with tempfile.TemporaryDirectory(prefix="msearch-gpu-") as td:
        td = Path(td)
        model_dir = build_tiny_clip(str(td / "clip"), full_size=args.size == "full",
                                    input_side=224 if args.size == "cheap" else None)
        settings = Settings(data_dir=td / "data", device=device,
                            models={"clip": model_dir, "text": "none", "clap": "none", "whisper": "none",
                                    "colpali": "none", "ocr": "none"},
                            index={"embed_batch_size": args.batch})
        files = [td / "pictures" / f"p{i:05d}.jpg" for i in range(args.images)]
        files[0].parent.mkdir()
        with ProcessPoolExecutor(args.workers) as pool:
            list(pool.map(make_picture, [(f, i) for i, f in enumerate(files)], chunksize=16))

        # -- decode only -------------------------------------------------------------------
        # Decode workers are started by a fork server: the embedder's engine threads are never forked.
        spawn = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(args.workers, spawn, _init, (settings,)) as pool:
            list(pool.map(decode, map(str, files[: args.workers * 2])))  # workers up
            start = time.perf_counter()
            decoded = list(pool.map(decode, map(str, files), chunksize=8))
            decode_s = time.perf_counter() - start
        pictures = [rgb_image(*d) for d in decoded]

        # -- model only: the image tower on ready pixel tensors ----------------------------
        from transformers import CLIPImageProcessor, CLIPModel

        dtype = torch.float16 if device == "cuda" else torch.float32
        model = CLIPModel.from_pretrained(model_dir, torch_dtype=dtype).to(device).eval()
        processor = CLIPImageProcessor.from_pretrained(model_dir)
        batches = [processor(images=pictures[i : i + args.batch], return_tensors="pt")["pixel_values"]
                   .to(device, dtype) for i in range(0, len(pictures), args.batch)]

        def sync():
            if device == "cuda":
                torch.cuda.synchronize()

        with torch.inference_mode():
            model.get_image_features(pixel_values=batches[0])
            sync()
            start = time.perf_counter()
            for b in batches:
                model.get_image_features(pixel_values=b)
            sync()
            model_s = time.perf_counter() - start
        del model, batches
        if device == "cuda":
            torch.cuda.empty_cache()

        # -- embed only: msearch's embedder on decoded pictures ----------------------------
        clip = build_embedder("clip", settings)
        out["embedder_device"] = clip.device
        embed_s = time_batches(clip.embed_images, pictures, args.batch)

        # -- end to end: files -> decode pool -> embedder ---------------------------------
        with ProcessPoolExecutor(args.workers, spawn, _init, (settings,)) as pool:
            list(pool.map(decode, map(str, files[: args.workers * 2])))
            start = time.perf_counter()
            batch, vectors = [], 0
            for d in pool.map(decode, map(str, files), chunksize=8):
                batch.append(rgb_image(*d))
                if len(batch) == args.batch:
                    vectors += len(clip.embed_images(batch))
                    batch = []
            if batch:
                vectors += len(clip.embed_images(batch))
            e2e_s = time.perf_counter() - start
        clip.close()
        assert vectors == args.images

    n = args.images
    out.update({
        "model_only_img_per_s": round(n / model_s, 1), "embed_only_img_per_s": round(n / embed_s, 1),
        "decode_only_img_per_s": round(n / decode_s, 1), "end_to_end_img_per_s": round(n / e2e_s, 1),
        "ratio_end_to_end_to_model_only": round(model_s / e2e_s, 3),
        "ratio_embed_only_to_model_only": round(model_s / embed_s, 3),
    })
    out["goal_ratio_ge_0.5"] = out["ratio_end_to_end_to_model_only"] >= 0.5
    report(out, [
        ("model only, images/s", out["model_only_img_per_s"]),
        ("msearch embedder on decoded pictures, images/s", out["embed_only_img_per_s"]),
        (f"msearch decode, {args.workers} processes, images/s", out["decode_only_img_per_s"]),
        ("end to end (files to vectors), images/s", out["end_to_end_img_per_s"]),
        ("ratio end to end / model only", out["ratio_end_to_end_to_model_only"]),
    ], args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
