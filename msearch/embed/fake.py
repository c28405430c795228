"""A deterministic embedder for tests of everything but the model itself.

Text: hashed bag of words (shared tokens give similar vectors). Images: a fixed random
projection of an 8x8 colour thumbnail (similar pictures give similar vectors). Sounds: a
projection of the log spectrum in 32 bands (similar sounds give similar vectors). Same input,
same vector, in every process.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from msearch.embed import normalize
from msearch.sparse import term_id, tokenize

_DIMS = {"clip": 64, "text": 48, "clap": 40, "colpali": 24}
_MODALITIES = {"clip": {"text", "image"}, "clap": {"text", "audio"}, "colpali": {"text", "image"}}
_BANDS = 32


class FakeEmbedder:
    def __init__(self, role: str):
        self.role = role
        self.model_id = f"fake-{role}"
        self.dim = _DIMS.get(role, 32)
        self.modalities = frozenset(_MODALITIES.get(role, {"text"}))
        rng = np.random.default_rng(1234)
        self._projection = rng.standard_normal((8 * 8 * 3, self.dim)).astype(np.float32)
        self._bands = rng.standard_normal((_BANDS, self.dim)).astype(np.float32)
        self.multi = role == "colpali"  # late interaction: one vector per token or image patch

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self.multi:  # a row per word
            return [self._bag(tokenize(t) or [t]) for t in texts]
        return self._bag(texts)

    def _bag(self, texts: Sequence[str]) -> np.ndarray:
        # Each token adds +1 or -1 (a bit of its hash) to one dimension (its hash modulo dim),
        # summed with numpy, not a Python step per token: a fake model should cost next to nothing.
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        rows, ids = [], []
        for i, text in enumerate(texts):
            tokens = tokenize(text) or [""]
            rows.extend([i] * len(tokens))
            ids.extend(map(term_id, tokens))
        h = np.asarray(ids, dtype=np.int64)
        np.add.at(out, (np.asarray(rows, dtype=np.int64), h % self.dim), np.where((h >> 16) & 1, 1.0, -1.0))
        return normalize(out + 1e-3)

    def embed_images(self, images) -> np.ndarray:
        if "image" not in self.modalities:
            raise ValueError(f"the {self.role} embedder does not take images")
        from PIL import Image

        rows = []
        for img in images:
            # Box averaging: as smooth as the default filter at this size, and cheap (a fake
            # model should cost next to nothing, so that benchmarks measure the plumbing).
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            small = np.asarray(rgb.resize((8, 8), Image.Resampling.BOX), dtype=np.float32)
            small = small / 255.0 - 0.5
            if self.multi:  # a row per 4x4 patch of the 8x8 thumbnail
                patches = [np.pad(small[y:y + 4, x:x + 4], ((y, 4 - y), (x, 4 - x), (0, 0))).reshape(-1)
                           for y in (0, 4) for x in (0, 4)]
                rows.append(normalize(np.stack(patches) @ self._projection))
                continue
            rows.append(small.reshape(-1) @ self._projection)
        if self.multi:
            return rows
        return normalize(np.stack(rows)) if rows else np.zeros((0, self.dim), np.float32)

    def embed_audios(self, clips: Sequence[bytes]) -> np.ndarray:
        if "audio" not in self.modalities:
            raise ValueError(f"the {self.role} embedder does not take audio")
        import io
        import wave

        rows = []
        for data in clips:
            with wave.open(io.BytesIO(data)) as w:
                samples = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
            spectrum = np.abs(np.fft.rfft(samples, n=4096)) if samples.size else np.zeros(2049)
            bands = np.log1p(np.array([b.mean() for b in np.array_split(spectrum, _BANDS)]))
            rows.append((bands - bands.mean()) @ self._bands)
        return normalize(np.stack(rows)) if rows else np.zeros((0, self.dim), np.float32)

    def close(self) -> None:
        pass
