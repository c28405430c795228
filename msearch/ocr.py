"""Text in pictures: PP-OCR (Chinese and English) through rapidocr-onnxruntime, on the CPU.

The models ship inside the wheel; nothing is downloaded. One engine per process (decode
workers are reused by Ray, so the 0.2 s start-up is paid once per worker).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np

from msearch.errors import ModelUnavailable

log = logging.getLogger(__name__)
SETTING = "MSEARCH_MODELS__OCR"


@dataclass(frozen=True)
class Line:
    text: str
    confidence: float
    top: float
    left: float


def check_ocr(spec: str) -> None:
    """Raise :class:`ModelUnavailable` unless ``spec`` names a usable OCR engine."""
    if spec != "rapidocr":
        raise ModelUnavailable("ocr", spec, SETTING, "the only OCR engine is 'rapidocr' (or 'none')")
    try:
        import rapidocr_onnxruntime  # noqa: F401
    except ImportError as e:  # missing package, or OpenCV without its system libraries (libGL)
        raise ModelUnavailable("ocr", spec, SETTING, f"rapidocr-onnxruntime cannot be imported: {e}") from e


@functools.lru_cache(maxsize=2)
def engine(threads: int = 1):
    check_ocr("rapidocr")
    from rapidocr_onnxruntime import RapidOCR

    log.info("loading the OCR engine (PP-OCR, %d thread(s))", threads)
    return RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=threads)


def read_lines(image, settings) -> list[Line]:
    """Lines of text in ``image`` (PIL, RGB), in reading order, above the confidence threshold."""
    o = settings.ocr
    from PIL import Image

    img = image.convert("RGB")
    side = max(img.size)
    target = min(max(side, o.min_side), o.max_side)
    if target != side:
        scale = target / side
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.BICUBIC)
    result, _ = engine(o.threads)(np.asarray(img)[:, :, ::-1])  # the engine takes BGR arrays
    lines = []
    for box, text, score in result or []:
        text = str(text).strip()
        if text and float(score) >= o.min_confidence:
            ys, xs = [p[1] for p in box], [p[0] for p in box]
            lines.append(Line(text, float(score), min(ys), min(xs)))
    # Reading order: top to bottom, then left to right.
    lines.sort(key=lambda line: (line.top, line.left))
    return lines


def read_text(image, settings) -> str:
    """The text in ``image`` as one string (one line per row), or "" when there is too little."""
    text = "\n".join(line.text for line in read_lines(image, settings))
    return text if len(text.replace("\n", "").strip()) >= settings.ocr.min_chars else ""
