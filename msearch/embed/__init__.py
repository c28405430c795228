"""Embedders: one protocol, one explicit registry from (role, family) to a class.

Roles are embedding spaces: ``clip`` (images, and text through CLIP's text tower) and
``text`` (documents). Each embedder returns L2-normalised float32 rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

from msearch.errors import ConfigError, ModelUnavailable

if TYPE_CHECKING:
    from PIL.Image import Image

    from msearch.settings import Settings

# Which file kinds each space holds, and which spaces a text query of a kind searches.
SPACE_KINDS: dict[str, tuple[str, ...]] = {"clip": ("image", "video"), "text": ("text",)}
ROLE_SETTING = {"clip": "MSEARCH_MODELS__CLIP", "text": "MSEARCH_MODELS__TEXT"}


class Embedder(Protocol):
    role: str
    model_id: str
    dim: int
    modalities: frozenset[str]  # subset of {"text", "image"}

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...
    def embed_images(self, images: Sequence["Image"]) -> np.ndarray: ...
    def close(self) -> None: ...


def model_spec(settings: "Settings", role: str) -> str:
    try:
        return getattr(settings.models, role)
    except AttributeError as e:
        raise ConfigError(f"no model role {role!r}; known roles: {sorted(ROLE_SETTING)}") from e


def build_embedder(role: str, settings: "Settings") -> Embedder:
    """Construct the embedder for ``role`` from settings (loads weights)."""
    spec = model_spec(settings, role)
    if spec == "fake":
        from msearch.embed.fake import FakeEmbedder

        return FakeEmbedder(role)
    from msearch.embed.resolve import resolve_model

    path = resolve_model(role, spec, ROLE_SETTING[role])
    match role:
        case "clip":
            from msearch.embed.infinity import InfinityClip

            return InfinityClip(spec, path, settings)
        case "text":
            from msearch.embed.infinity import InfinityText

            return InfinityText(spec, path, settings)
    raise ConfigError(f"no embedder for role {role!r} and model {spec!r}")


def available_roles(settings: "Settings", roles: Sequence[str] = ("clip", "text")) -> tuple[dict[str, str], dict[str, str]]:
    """Which roles have loadable weights, without loading them.

    Returns ({role: model_id}, {role: message}) for the available and the missing ones.
    """
    from msearch.embed.resolve import resolve_model

    ok, missing = {}, {}
    for role in roles:
        spec = model_spec(settings, role)
        if spec == "fake":
            ok[role] = spec
            continue
        try:
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
