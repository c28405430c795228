"""Cutting files into units and embedding them: the core that pipeline stages call.

A unit is one piece of a file that gets one vector in one space: an image, a text chunk, a
video scene's keyframe, a sound window, a speech segment (later: a page). Rows are plain dicts
so that Ray Data can carry them.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from msearch import sparse
from msearch.embed import ROLES, SPEECH_ROLES, pooled
from msearch.embed.resolve import image_embed_side
from msearch.errors import BadInput
from msearch.media.image import large_image, prepare_for, rgb_image, shrink_rgb
from msearch.media.text import check_size, chunk_text, read_text

log = logging.getLogger(__name__)


CHUNK_UNITS = 32  # units per block handed downstream: a long recording streams through


def decode_file(row: dict, settings, models: Mapping[str, str] | None = None) -> Iterator[list[dict]]:
    """Cut one hashed file into unit rows, yielded in chunks of at most ``CHUNK_UNITS`` + 1.

    Only the last chunk's rows carry ``n_units`` (the total); earlier ones have None, so a file
    is settled only once all its units are written. A failure becomes one row with ``error``
    set (units already yielded are then discarded by the writer). ``models`` are the available
    roles (default: all), which decide what a video or audio file is cut into.
    """
    base = {"run_id": row["run_id"], "path": row["path"], "content_hash": row["content_hash"], "kind": row["kind"]}
    roles = set(models) if models is not None else set(ROLES)
    media: dict = {}
    notes: list[str] = []
    held: list[dict] = []
    count = 0
    clock = time.perf_counter()
    try:
        for unit in _units(row, settings, roles, media, notes):
            now = time.perf_counter()
            held.append({**base, **unit, "unit": count, "n_units": None, "error": None, "decode_s": now - clock})
            clock, count = now, count + 1
            if len(held) > CHUNK_UNITS:
                yield held[:CHUNK_UNITS]
                held = held[CHUNK_UNITS:]
    except BadInput as e:
        yield [{**base, "n_units": 0, "error": str(e), "media": _media(media)}]
        return
    except OSError as e:
        yield [{**base, "n_units": 0, "error": f"cannot read: {e.strerror or e}", "media": _media(media)}]
        return
    except Exception as e:  # a decoder bug must not stop the run: record it on the file
        log.exception("decoding %s failed", row["path"])
        yield [{**base, "n_units": 0, "error": f"decoding failed: {type(e).__name__}: {e}"}]
        return
    if not count:
        note = "; ".join(notes) or f"no {row['kind']} content to index"
        yield [{**base, "n_units": 0, "error": None, "note": note, "media": _media(media)}]
        return
    yield [{**u, "n_units": count, "media": _media(media)} for u in held]


def _media(media: dict) -> str | None:
    return json.dumps(media) if media else None


def _warn(media: dict, text: str) -> None:
    """Note what could not be read of a file that is indexed from the rest (``media["warnings"]``)."""
    warnings = media.setdefault("warnings", [])
    if text not in warnings:
        warnings.append(text)


def _units(row: dict, settings, roles: set[str], media: dict, notes: list[str]) -> Iterator[dict]:
    path = Path(row["path"])
    match row["kind"]:
        case "image":
            yield from _image_units(path, settings, roles, media, notes)
        case "text":
            yield from _text_units(path, settings, row.get("format") or "", media)
        case "page":
            yield from _page_units(path, settings, roles, media, notes)
        case "video":
            yield from _video_units(path, settings, roles, row.get("speech"), media, notes)
        case "audio":
            yield from _audio_units(path, settings, roles, row.get("speech"), media, notes)
        case kind:
            raise BadInput(f"no decoder for {kind} files")


def _image_units(path: Path, settings, roles: set[str], media: dict, notes: list[str]) -> Iterator[dict]:
    img = settings.image
    data = path.read_bytes()
    prepared = prepare_for(data, settings)
    if "clip" in roles:
        yield {"space": "clip", "pixels": prepared.rgb, "width": prepared.width, "height": prepared.height,
               "thumbnail": prepared.thumbnail, "thumb_key": "image"}
    else:
        notes.append("pictures need a CLIP model")
    if "ocr" in roles:
        from msearch import ocr

        text = ocr.read_text(large_image(data, max_pixels=img.max_pixels, max_side=settings.ocr.max_side), settings)
        media["ocr_chars"] = len(text)
        if not text:
            notes.append("no text found in it")
        for u in _chunks(text, settings):
            yield {**u, "thumbnail": prepared.thumbnail, "thumb_key": "image", "ocr": True}


def _chunks(text: str, settings) -> list[dict]:
    chunks = chunk_text(text, settings.text.chunk_chars, settings.text.chunk_overlap)
    return [{"space": "text", "text": c.text, "char_start": c.start, "char_end": c.end} for c in chunks]


def _page_units(path: Path, settings, roles: set[str], media: dict, notes: list[str]) -> Iterator[dict]:
    """Per PDF page: text-layer chunks (or, for a page without one, the text OCR reads on its
    image), and the page image for late-interaction page search; all carry the page number."""
    from msearch.media.document import pdf_pages

    ps, side = settings.pages, settings.pages.render_side
    pages = ocr_pages = 0
    problems: list[str] = []
    for page in pdf_pages(path, ps.max_pages, ps.reopen_every, problems):
        pages += 1
        scanned = not page.text.strip()
        image = None
        if "colpali" in roles:
            image = page.render(side)
            thumb = image.copy()
        else:
            thumb = page.render(settings.image.thumb_side)
        thumb.thumbnail((settings.image.thumb_side, settings.image.thumb_side))
        thumbnail = jpeg(thumb)
        text = page.text
        if scanned and "ocr" in roles:
            from msearch import ocr

            text = ocr.read_text(page.render(settings.ocr.page_side), settings)
            ocr_pages += 1
        common = {"page": page.number, "thumbnail": thumbnail, "thumb_key": f"page{page.number}"}
        if "text" in roles:
            for u in _chunks(text, settings):
                yield {**u, **common}
        if "colpali" in roles:
            yield {"space": "colpali", "pixels": image.tobytes(), "width": image.width, "height": image.height,
                   **common}
    media.update(pages=pages, ocr_pages=ocr_pages)
    for text in problems:
        _warn(media, text)
    if problems and not pages:
        raise BadInput("; ".join(problems))
    if pages and "ocr" not in roles:
        notes.append("pages without a text layer need OCR")


def jpeg(image, quality: int = 85) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _video_units(path: Path, settings, roles: set[str], speech: str | None, media: dict,
                 notes: list[str]) -> Iterator[dict]:
    from msearch.media import video

    vs = settings.video
    binary = video.ffmpeg_binary(vs.ffmpeg)
    info = video.probe(path, binary)
    media.update(info.as_dict())
    read = "ocr" in roles and settings.ocr.keyframes
    if "clip" in roles or read:
        lost: list[str] = []
        scenes = video.scan(path, info, vs, binary, hwaccel=video.use_hwaccel(vs.hwaccel, binary), warnings=lost)
        for text in lost:
            _warn(media, text)
        media["scenes"] = len(scenes)
        side = image_embed_side(settings)
        for i, s in enumerate(scenes):
            when = {"start_s": round(s.start_s, 3), "end_s": round(s.end_s, 3),
                    "thumbnail": video.thumbnail(s, settings.image.thumb_side), "thumb_key": f"scene{i}"}
            if "clip" in roles:
                pixels, width, height = shrink_rgb(s.keyframe, s.width, s.height, side)
                yield {"space": "clip", "pixels": pixels, "width": width, "height": height, **when}
            if read:  # text on screen: captions, titles, slides
                from msearch import ocr

                for u in _chunks(ocr.read_text(video.keyframe_image(s), settings), settings):
                    yield {**u, **when}
    if "clip" not in roles:
        notes.append("keyframes need a CLIP model")
    if info.acodec is None:
        notes.append("no soundtrack")
        return
    try:
        yield from _sound_units(path, binary, settings, roles, media, notes)
    except BadInput as e:  # a broken soundtrack does not cost the pictures
        media["audio_error"] = str(e)
        notes.append(f"soundtrack unreadable: {e}")
        return
    yield from _speech_units(speech, roles, media, notes, required=False)


def _audio_units(path: Path, settings, roles: set[str], speech: str | None, media: dict,
                 notes: list[str]) -> Iterator[dict]:
    from msearch.media import audio, video

    binary = video.ffmpeg_binary(settings.video.ffmpeg)
    info = audio.probe(path, binary)
    if info is None:
        raise BadInput("no audio stream")
    media.update(info.as_dict())
    yield from _sound_units(path, binary, settings, roles, media, notes)
    yield from _speech_units(speech, roles, media, notes, required=True)


def _sound_units(path: Path, binary: str, settings, roles: set[str], media: dict, notes: list[str]) -> Iterator[dict]:
    """CLAP windows of the soundtrack (when a CLAP model is available)."""
    from msearch.media import audio

    if "clap" not in roles:
        notes.append("sounds need a CLAP model")
        return
    a = settings.audio
    n = 0
    report: dict = {}
    for w in audio.windows(path, binary, audio.CLAP_RATE, a.window_s, a.hop_s, a.block_s, a.silence_db, report):
        n += 1
        yield {"space": "clap", "audio": audio.wav_bytes(w.samples, audio.CLAP_RATE),
               "start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3)}
    media["sound_windows"] = n
    _heard(media, report.get("decoded_s"), report.get("errors"))
    if not n:
        notes.append("silent")


def _heard(media: dict, decoded_s: float | None, errors: str | None) -> None:
    """A soundtrack or recording that decoded shorter than its header declares, or with errors."""
    from msearch.media.video import shortfall

    declared = media.get("duration_s")
    if decoded_s is not None and shortfall(decoded_s, declared):
        _warn(media, f"sound stops at {decoded_s:.1f} s of {declared:.1f} s")
    if errors:
        _warn(media, f"audio decoding errors: {errors}")


def _speech_units(speech: str | None, roles: set[str], media: dict, notes: list[str], required: bool) -> Iterator[dict]:
    """Transcript segments (made by a transcription actor) as text units with their times."""
    if not all(r in roles for r in SPEECH_ROLES):
        notes.append("speech needs a whisper and a text model")
        return
    if not speech:
        return
    transcript = json.loads(speech)
    if transcript.get("error"):
        if required:
            raise BadInput(transcript["error"])
        media["speech_error"] = transcript["error"]
        notes.append(f"speech: {transcript['error']}")
        return
    _heard(media, transcript.get("duration_s"), None)
    media["language"] = transcript.get("language")
    media["language_probability"] = transcript.get("language_probability")
    media["speech_segments"] = len(transcript["segments"])
    media["transcribe_s"] = transcript.get("seconds")
    if not transcript["segments"]:
        notes.append("no speech found")
    for seg in transcript["segments"]:
        yield {"space": "text", "text": seg["text"], "start_s": seg["start_s"], "end_s": seg["end_s"]}


def _text_units(path: Path, settings, fmt: str, media: dict) -> Iterator[dict]:
    """Plain text, HTML (its visible text), Word documents, and PowerPoint slides (page = slide)."""
    from msearch.media import document

    if fmt in ("pptx", "docx"):
        check_size(path, settings.text.max_bytes)  # read_text checks plain text itself
    if fmt == "pptx":
        slides = document.pptx_slides(path)
        media["slides"] = len(slides)
        for number, text in enumerate(slides, 1):
            for u in _chunks(text, settings):
                yield {**u, "page": number}
        return
    if fmt == "docx":
        text = document.docx_text(path)
    else:
        text, _encoding = read_text(path, settings.text.max_bytes)
        if document.looks_like_html(text, path.suffix):
            text = document.html_text(text)
    yield from _chunks(text, settings)


def out_of_memory(e: BaseException) -> bool:
    """CUDA's and the host's out-of-memory errors (torch raises either; infinity wraps some)."""
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower()


def halving(embed, items: list) -> list:
    """``embed(items)``; when it runs out of memory, each half on its own (down to one item)."""
    try:
        return list(embed(items))
    except Exception as e:
        if len(items) < 2 or not out_of_memory(e):
            raise
        log.warning("out of memory embedding %d inputs; retrying in halves", len(items))
        mid = len(items) // 2
        return halving(embed, items[:mid]) + halving(embed, items[mid:])


def embed_units(rows: list[dict], embedders: Mapping[str, object]) -> list[dict]:
    """Add ``vector`` (and for text, BM25 ``sparse_*``) to unit rows, batched per space.

    Rows that carry an error pass through. A space whose embedder fails marks its rows failed.
    """
    out = [dict(r) for r in rows]
    by_space: dict[str, list[int]] = {}
    for i, r in enumerate(out):
        if not r.get("error") and r.get("space"):
            by_space.setdefault(r["space"], []).append(i)
    for space, idx in by_space.items():
        embedder = embedders.get(space)
        start = time.perf_counter()
        try:
            if embedder is None:
                raise BadInput(f"no {space} model is loaded")
            if space in ("clip", "colpali"):
                vectors = halving(embedder.embed_images,
                                  [rgb_image(out[i]["pixels"], out[i]["width"], out[i]["height"]) for i in idx])
            elif space == "clap":
                vectors = halving(embedder.embed_audios, [out[i]["audio"] for i in idx])
            else:
                vectors = halving(embedder.embed_texts, [out[i]["text"] for i in idx])
        except Exception as e:
            log.exception("embedding %d %s units failed", len(idx), space)
            for i in idx:
                out[i]["error"] = f"embedding failed: {type(e).__name__}: {e}"
            continue
        share = (time.perf_counter() - start) / len(idx)
        if getattr(embedder, "multi", False):  # one row per token: the dense vector is their mean
            for i, rows in zip(idx, vectors):
                out[i]["multi"] = np.asarray(rows, dtype=np.float32).tolist()
            vectors = [pooled(rows) for rows in vectors]
        for i, vector in zip(idx, np.asarray(vectors, dtype=np.float32)):
            row = out[i]
            row["vector"] = vector.tolist()
            row["model"] = embedder.model_id
            row["embed_s"] = share
            if space == "text":
                row["sparse_indices"], row["sparse_values"] = sparse.document_vector(row["text"])
    for r in out:
        r.pop("pixels", None)
        r.pop("audio", None)
    return out


def transcribe_file(row: dict, transcriber, settings) -> dict:
    """Add the ``speech`` column (a JSON transcript, or its error) to an audio or video row."""
    from msearch.media import video
    from msearch.media.audio import probe

    out = dict(row)
    if row.get("kind") not in ("audio", "video") or row.get("error"):
        return out
    path = Path(row["path"])
    try:
        binary = video.ffmpeg_binary(settings.video.ffmpeg)
        if probe(path, binary) is None:
            return out  # no audio stream: nothing to transcribe
        out["speech"] = json.dumps(transcriber().transcribe(path, binary).as_dict())
    except BadInput as e:
        out["speech"] = json.dumps({"error": str(e)})
    except OSError as e:
        out["speech"] = json.dumps({"error": f"cannot read: {e.strerror or e}"})
    except Exception as e:  # a transcription bug must not stop the run: record it on the file
        log.exception("transcribing %s failed", row["path"])
        out["speech"] = json.dumps({"error": f"transcription failed: {type(e).__name__}: {e}"})
    return out
