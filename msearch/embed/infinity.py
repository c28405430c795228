"""Models served Python-natively by infinity-emb (one engine per embedder)."""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

from msearch.embed import ROLE_SETTING, normalize
from msearch.errors import MissingDependency, ModelUnavailable

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class _InfinityEmbedder:
    modalities: frozenset[str] = frozenset({"text"})

    def __init__(self, role: str, spec: str, path: str, settings):
        self.role, self.model_id = role, spec
        # infinity writes a cache in the working directory unless told otherwise.
        os.environ.setdefault("INFINITY_HOME", str(settings.data_dir / "cache" / "infinity"))
        try:
            from infinity_emb import EngineArgs, SyncEngineArray
        except ImportError as e:
            raise MissingDependency("infinity-emb is not installed: pip install 'msearch[models]'") from e
        self.device = resolve_device(settings.device)
        args = EngineArgs(
            model_name_or_path=path, served_model_name=role, engine="torch", device=self.device,
            model_warmup=False, bettertransformer=False, batch_size=settings.index.embed_batch_size,
        )
        try:
            self._array = SyncEngineArray.from_args([args])
        except Exception as e:  # a folder that is not a loadable model, corrupt weights, ...
            raise ModelUnavailable(role, spec, ROLE_SETTING[role], f"cannot load it: {e}") from e
        self._configure(settings)
        self.dim = self._probe_dim()
        log.info("loaded %s model %s on %s (dim %d)", role, spec, self.device, self.dim)

    def _configure(self, settings) -> None:
        pass

    def _probe_dim(self) -> int:
        return int(self.embed_texts(["dimension probe"]).shape[1])

    def _worker_models(self):
        engine = self._array.async_engine_array[self.role]
        return [w._model for w in engine._batch_handler.model_worker]

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, getattr(self, "dim", 0)), np.float32)
        embs, _ = self._array.embed(model=self.role, sentences=list(texts)).result()
        return normalize(np.stack(embs))

    def embed_images(self, images) -> np.ndarray:
        raise ValueError(f"the {self.role} model {self.model_id} does not take images")

    def embed_audios(self, clips) -> np.ndarray:
        raise ValueError(f"the {self.role} model {self.model_id} does not take sounds")

    def _limit_text(self, limit: int) -> None:
        """infinity takes the text length from config.max_length, which transformers defaults to
        20 tokens: set the model's real context instead (bounded by its position table)."""
        for model in self._worker_models():
            text_cfg = getattr(model.model.config, "text_config", None)
            positions = getattr(text_cfg, "max_position_embeddings", None) or limit
            model.max_length = min(limit, positions)

    def text_max_length(self) -> int:
        return self._worker_models()[0].max_length

    def close(self) -> None:
        array = self.__dict__.pop("_array", None)
        if array is not None:
            array.stop()
            del array


class InfinityText(_InfinityEmbedder):
    modalities = frozenset({"text"})

    def __init__(self, spec: str, path: str, settings):
        super().__init__("text", spec, path, settings)


class InfinityClip(_InfinityEmbedder):
    modalities = frozenset({"text", "image"})

    def __init__(self, spec: str, path: str, settings):
        super().__init__("clip", spec, path, settings)

    def _configure(self, settings) -> None:
        self._limit_text(settings.models.clip_max_length)

    def embed_images(self, images) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        embs, _ = self._array.image_embed(model=self.role, images=list(images)).result()
        return normalize(np.stack(embs))


class InfinityClap(_InfinityEmbedder):
    """CLAP: sounds (WAV bytes at the model's rate, 48 kHz for HTSAT) and text descriptions."""

    modalities = frozenset({"text", "audio"})

    def __init__(self, spec: str, path: str, settings):
        super().__init__("clap", spec, path, settings)

    def _configure(self, settings) -> None:
        # RoBERTa's position table counts two reserved positions beyond its context.
        self._limit_text(settings.models.clap_max_length)
        for model in self._worker_models():
            model.max_length = min(model.max_length, model.model.config.text_config.max_position_embeddings - 2)
        self.sampling_rate = int(self._worker_models()[0].sampling_rate)

    def embed_audios(self, clips) -> np.ndarray:
        if not clips:
            return np.zeros((0, self.dim), np.float32)
        embs, _ = self._array.audio_embed(model=self.role, audios=list(clips)).result()
        return normalize(np.stack(embs))


class InfinityColPali(_InfinityEmbedder):
    """Late interaction (ColPali/ColQwen2 through colpali-engine): one vector per token.

    ``embed_images`` and ``embed_texts`` return one (tokens x dim) array per input, without
    padding rows (infinity pads a batch to its longest item; those rows are all zero).
    """

    modalities = frozenset({"text", "image"})
    multi = True

    def __init__(self, spec: str, path: str, settings):
        super().__init__("colpali", spec, path, settings)

    def _probe_dim(self) -> int:
        return int(self.embed_texts(["dimension probe"])[0].shape[1])

    @staticmethod
    def _rows(embs) -> list[np.ndarray]:
        out = []
        for e in embs:
            e = np.asarray(e, dtype=np.float32)
            out.append(e[np.any(e != 0, axis=1)])
        return out

    def embed_texts(self, texts: Sequence[str]) -> list[np.ndarray]:
        if not texts:
            return []
        embs, _ = self._array.embed(model=self.role, sentences=list(texts)).result()
        return self._rows(embs)

    def embed_images(self, images) -> list[np.ndarray]:
        if not images:
            return []
        embs, _ = self._array.image_embed(model=self.role, images=list(images)).result()
        return self._rows(embs)

