"""Document throughput on this machine: PDF text extraction, page rendering, OCR of scanned pages
and page embedding with the late-interaction model, in pages per second, and the bytes stored
per page (computed: vectors x 128 dimensions x 2 bytes; qdrant-edge stores float16 multi-vectors
at 258 bytes per vector on disk).

    .venv/bin/python benchmarks/documents.py [--pages 500] [--scans 10] [--embed 40] [--out results.json]

PDFs are generated (fpdf2, as in the tests). No ColQwen2 weights exist offline: page embedding is
measured with the tests' tiny random ColQwen2 through the real infinity-emb path (the plumbing's
cost, not a real model's); bytes per page are given for it and for a real ColQwen2 (up to 768
image-patch vectors + the prompt's tokens).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from common import report, run_info

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=500)
    parser.add_argument("--scans", type=int, default=10)
    parser.add_argument("--embed", type=int, default=40)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from conftest import make_pdf, text_picture
    from tiny_models import build_tiny_colqwen2

    from msearch import ocr
    from msearch.embed.infinity import InfinityColPali
    from msearch.media.document import pdf_pages
    from msearch.settings import Settings

    out = run_info()
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        settings = Settings(data_dir=td / "data")
        text_pdf = make_pdf(td / "text.pdf", [f"Page {i}: the valve assembly manual, section {i % 9}\n"
                                              "Tighten the flange bolts in a star pattern." for i in range(args.pages)])
        start = time.perf_counter()
        chars = sum(p.chars for p in pdf_pages(text_pdf, 100_000))
        text_s = time.perf_counter() - start
        start = time.perf_counter()
        for p in pdf_pages(text_pdf, 100_000):
            p.render(settings.pages.render_side)
        render_s = time.perf_counter() - start
        out["text"] = {"pages": args.pages, "chars": chars, "pages_per_s": round(args.pages / text_s, 1),
                       "render_pages_per_s": round(args.pages / render_s, 1)}

        scan = text_picture(["Scanned delivery note 5520", "Harbour office, pier 4", "12 crates of lemons"],
                            size=(1240, 1754), font_size=48)
        scan_pdf = make_pdf(td / "scans.pdf", [scan] * args.scans)
        ocr.engine(settings.ocr.threads)  # load once, as a decode worker does
        start = time.perf_counter()
        read = [ocr.read_text(p.render(settings.ocr.page_side), settings) for p in pdf_pages(scan_pdf, 100_000)]
        ocr_s = time.perf_counter() - start
        out["ocr"] = {"pages": args.scans, "pages_per_s": round(args.scans / ocr_s, 2),
                      "threads": settings.ocr.threads, "sample": read[0]}

        model = build_tiny_colqwen2(str(td / "colqwen2"))
        colpali = InfinityColPali("tiny-colqwen2", model, settings)
        images = [p.render(settings.pages.render_side) for p in pdf_pages(text_pdf, args.embed)]
        colpali.embed_images(images[:4])  # warm-up
        start = time.perf_counter()
        rows = []
        for i in range(0, len(images), 8):
            rows.extend(colpali.embed_images(images[i : i + 8]))
        embed_s = time.perf_counter() - start
        colpali.close()
        vectors = sum(len(r) for r in rows) / len(rows)
        real_vectors = 768 + 20
        out["pages"] = {
            "model": "tiny random ColQwen2 (plumbing only), infinity-emb, CPU", "pages": len(rows),
            "pages_per_s": round(len(rows) / embed_s, 1), "vectors_per_page": round(vectors, 1),
            "multivector_bytes_per_page": round(vectors * colpali.dim * 2),
            "real_colqwen2_bytes_per_page_max": real_vectors * 128 * 2 + 128 * 4,
        }

    report(out, [
        ("PDF text layer, pages per s", out['text']['pages_per_s']),
        ("PDF render at 768 px, pages per s", out['text']['render_pages_per_s']),
        ("OCR of scanned pages, pages per s", out['ocr']['pages_per_s']),
        ("page embedding (tiny ColQwen2), pages per s", out['pages']['pages_per_s']),
        ("multi-vector bytes per page (tiny, float16)", out['pages']['multivector_bytes_per_page']),
        ("real ColQwen2 bytes per page, at most", out['pages']['real_colqwen2_bytes_per_page_max']),
    ], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
