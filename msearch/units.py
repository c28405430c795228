"""Cutting files into units and embedding them: the core that pipeline stages call.

A unit is one piece of a file that gets one vector per space: an image, a text chunk (later:
a video scene, an audio window, a page). Rows are plain dicts so that Ray Data can carry them.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from msearch import sparse
from msearch.errors import BadInput
from msearch.media.image import prepare_image, rgb_image
from msearch.media.text import chunk_text, read_text

log = logging.getLogger(__name__)


def decode_file(row: dict, settings) -> list[dict]:
    """Cut one hashed file into unit rows; a failure becomes one row with ``error`` set."""
    base = {"run_id": row["run_id"], "path": row["path"], "content_hash": row["content_hash"], "kind": row["kind"]}
    start = time.perf_counter()
    try:
        match row["kind"]:
            case "image":
                units = _image_units(Path(row["path"]), settings)
            case "text":
                units = _text_units(Path(row["path"]), settings)
            case "video":
                units = _video_units(Path(row["path"]), settings)
            case kind:
                raise BadInput(f"no decoder for {kind} files")
    except BadInput as e:
        return [{**base, "n_units": 0, "error": str(e)}]
    except OSError as e:
        return [{**base, "n_units": 0, "error": f"cannot read: {e.strerror or e}"}]
    except Exception as e:  # a decoder bug must not stop the run: record it on the file
        log.exception("decoding %s failed", row["path"])
        return [{**base, "n_units": 0, "error": f"decoding failed: {type(e).__name__}: {e}"}]
    if not units:
        return [{**base, "n_units": 0, "error": None, "note": f"no {row['kind']} content to index"}]
    share = (time.perf_counter() - start) / len(units)
    return [{**base, **u, "unit": i, "n_units": len(units), "error": None, "decode_s": share}
            for i, u in enumerate(units)]


def _image_units(path: Path, settings) -> list[dict]:
    img = settings.image
    prepared = prepare_image(path.read_bytes(), max_pixels=img.max_pixels, embed_side=img.embed_side,
                             thumb_side=img.thumb_side)
    return [{"space": "clip", "pixels": prepared.rgb, "width": prepared.width, "height": prepared.height,
             "thumbnail": prepared.thumbnail}]


def _video_units(path: Path, settings) -> list[dict]:
    from msearch.media import video

    vs = settings.video
    binary = video.ffmpeg_binary(vs.ffmpeg)
    info = video.probe(path, binary)
    scenes = video.scan(path, info, vs, binary, hwaccel=video.use_hwaccel(vs.hwaccel, binary))
    media = json.dumps(info.as_dict())
    return [{"space": "clip", "pixels": s.keyframe, "width": s.width, "height": s.height,
             "start_s": round(s.start_s, 3), "end_s": round(s.end_s, 3),
             "thumbnail": video.thumbnail(s, settings.image.thumb_side), "media": media} for s in scenes]


def _text_units(path: Path, settings) -> list[dict]:
    text, _encoding = read_text(path, settings.text.max_bytes)
    chunks = chunk_text(text, settings.text.chunk_chars, settings.text.chunk_overlap)
    return [{"space": "text", "text": c.text, "char_start": c.start, "char_end": c.end} for c in chunks]


def embed_units(rows: list[dict], embedders: Mapping[str, object]) -> list[dict]:
    """Add ``vector`` (and for text, BM25 ``sparse_*``) to unit rows, batched per space.

    Rows that carry an error pass through. A space whose embedder fails marks its rows failed.
    """
    out = [dict(r) for r in rows]
    by_space: dict[str, list[int]] = {}
    for i, r in enumerate(out):
        if not r.get("error") and int(r.get("n_units") or 0) > 0:
            by_space.setdefault(r["space"], []).append(i)
    for space, idx in by_space.items():
        embedder = embedders.get(space)
        start = time.perf_counter()
        try:
            if embedder is None:
                raise BadInput(f"no {space} model is loaded")
            if space == "clip":
                vectors = embedder.embed_images([rgb_image(out[i]["pixels"], out[i]["width"], out[i]["height"]) for i in idx])
            else:
                vectors = embedder.embed_texts([out[i]["text"] for i in idx])
        except Exception as e:
            log.exception("embedding %d %s units failed", len(idx), space)
            for i in idx:
                out[i]["error"] = f"embedding failed: {type(e).__name__}: {e}"
            continue
        share = (time.perf_counter() - start) / len(idx)
        for i, vector in zip(idx, np.asarray(vectors, dtype=np.float32)):
            row = out[i]
            row["vector"] = vector.tolist()
            row["model"] = embedder.model_id
            row["embed_s"] = share
            if space == "text":
                row["sparse_indices"], row["sparse_values"] = sparse.document_vector(row["text"])
    for r in out:
        r.pop("pixels", None)
    return out
