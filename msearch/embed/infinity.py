"""Models served Python-natively by infinity-emb (one engine per embedder)."""

from __future__ import annotations

import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
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


def model_streams(settings, device: str | None = None) -> int:
    """How many forward passes of one model run at once (``MSEARCH_INDEX__EMBED_STREAMS``; 0: two
    on a CPU when the model has two or more cores, else one). On a CPU, two streams of half the
    threads each keep the cores busy where one stream's threads stall: its single-threaded steps,
    and any other process that takes a core from one of its threads, which its partner threads
    then wait for. On a GPU one stream already keeps the device busy."""
    if settings.index.embed_streams:
        return settings.index.embed_streams
    if (device or resolve_device(settings.device)) != "cpu":
        return 1
    return 2 if (settings.index.embed_threads or os.cpu_count() or 1) >= 2 else 1


def _add_streams(engine, count: int) -> ThreadPoolExecutor:
    """Give a running infinity engine ``count - 1`` more model workers over the model it has
    loaded: each takes batches from the same queue and runs its own forward pass, sharing the
    weights (torch's inference is thread-safe; preparing a batch runs under a lock, since a fast
    tokenizer may not be called from two threads at once). infinity's own replicas would load the
    model again, and its thread pool (cores + 4 threads) is too small for a second worker's
    three threads on a small machine: their first call never returns. The workers get a pool
    of their own, and stop with the engine."""
    from infinity_emb.inference.batch_handler import ModelWorker, ShutdownReadOnly, ThreadPoolExecutorReadOnly

    handler = engine._batch_handler
    first = handler.model_worker[0]
    model = first._model
    prepare, lock = model.encode_pre, threading.Lock()

    def encode_pre(items):
        with lock:
            return prepare(items)

    model.encode_pre = encode_pre
    pool = ThreadPoolExecutor(3 * (count - 1), thread_name_prefix="msearch-stream")
    for _ in range(count - 1):
        worker = ModelWorker(shutdown=ShutdownReadOnly(handler._shutdown), model=model,
                             threadpool=ThreadPoolExecutorReadOnly(pool), input_q=handler._publish_to_model_queue,
                             output_q=handler._result_queue, batch_delay=first._batch_delay)
        worker.spawn()
        handler.model_worker.append(worker)
    return pool


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
        self.streams = model_streams(settings, self.device)
        # A call of EMBED_BATCH_SIZE items makes one batch per stream.
        args = EngineArgs(
            model_name_or_path=path, served_model_name=role, engine="torch", device=self.device,
            model_warmup=False, bettertransformer=False,
            batch_size=max(1, math.ceil(settings.index.embed_batch_size / self.streams)),
        )
        try:
            self._array = SyncEngineArray.from_args([args])
        except Exception as e:  # a folder that is not a loadable model, corrupt weights, ...
            raise ModelUnavailable(role, spec, ROLE_SETTING[role], f"cannot load it: {e}") from e
        self._stream_pool = (_add_streams(self._array.async_engine_array[role], self.streams)
                             if self.streams > 1 else None)
        self._configure(settings)
        self.dim = self._probe_dim()
        log.info("loaded %s model %s on %s (dim %d, %d stream%s)", role, spec, self.device, self.dim,
                 self.streams, "s" if self.streams > 1 else "")

    def _configure(self, settings) -> None:
        pass

    def _probe_dim(self) -> int:
        return int(self.embed_texts(["dimension probe"]).shape[1])

    def _worker_models(self):
        engine = self._array.async_engine_array[self.role]
        return list({id(w._model): w._model for w in engine._batch_handler.model_worker}.values())

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
        pool = self.__dict__.pop("_stream_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)  # its workers end with the engine's stop


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

