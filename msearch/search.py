"""Query planning and embedding: the same code for the CLI, Serve and tests.

:class:`SearchService` takes its embedders and its store as arguments: in-process objects
in tests and on the CLI, Ray handles wrapped in small adapters under Serve.
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence

import numpy as np

from msearch import sparse
from msearch.detect import KINDS
from msearch.embed import SPACE_KINDS, pooled
from msearch.errors import BadInput, UnsupportedQuery
from msearch.media.image import prepare_image
from msearch.store.vectors import MULTI, MULTI_SPACES, SPARSE, SpaceQuery

# Extra candidates fetched per ranked list, so that grouping by file still fills top_k.
CANDIDATES = 4
# First-stage candidates of a late-interaction (MaxSim) query, found by pooled page vectors.
PREFETCH = 100


class QueryEmbedder(Protocol):
    def embed_texts(self, texts: Sequence[str]): ...
    def embed_images(self, images): ...
    def embed_audios(self, clips: Sequence[bytes]): ...


class _Ready:
    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def _submit(embedder, texts: list[str]):
    """A pending ``embed_texts``: the embedder's own ``submit_texts`` where it has one (a remote
    model), else computed now."""
    submit = getattr(embedder, "submit_texts", None)
    return submit(texts) if submit is not None else _Ready(embedder.embed_texts(texts))


class Store(Protocol):
    def spaces(self) -> dict[str, int]: ...
    def search(self, queries: list[SpaceQuery], top_k: int) -> list[dict]: ...


def check_kinds(kinds: Sequence[str] | None) -> tuple[str, ...]:
    if not kinds:
        return KINDS
    bad = sorted(set(kinds) - set(KINDS))
    if bad:
        raise BadInput(f"unknown kind(s) {bad}; kinds are {list(KINDS)}")
    return tuple(dict.fromkeys(kinds))


class SearchService:
    def __init__(self, embedders: Mapping[str, QueryEmbedder], store: Store, settings):
        self.embedders = embedders
        self.store = store
        self.settings = settings

    def _top_k(self, top_k: int | None) -> int:
        if top_k is None:
            top_k = self.settings.serve.default_top_k
        if not 1 <= top_k <= self.settings.serve.max_top_k:
            raise BadInput(f"top_k must be between 1 and {self.settings.serve.max_top_k}")
        return top_k

    def _spaces_for(self, kinds: tuple[str, ...]) -> list[str]:
        """Spaces that hold some of ``kinds`` and that we can embed a query for."""
        present = self.store.spaces()
        return [space for space, space_kinds in SPACE_KINDS.items()
                if space in present and space in self.embedders and set(space_kinds) & set(kinds)]

    def _by_example(self, space: str, vector, kinds: tuple[str, ...], top_k: int) -> list[dict]:
        """Rank one space's units by an example's vector (an image for clip, a sound for clap)."""
        space_kinds = tuple(k for k in SPACE_KINDS[space] if k in kinds)
        if space not in self.store.spaces() or not space_kinds:
            return []
        return self.store.search(
            [SpaceQuery(space, [float(x) for x in vector], kinds=space_kinds, limit=top_k * CANDIDATES)], top_k
        )

    def search_text(self, query: str, kinds: Sequence[str] | None = None, top_k: int | None = None) -> list[dict]:
        query = (query or "").strip()
        if not query:
            raise BadInput("the query is empty")
        kinds = check_kinds(kinds)
        top_k = self._top_k(top_k)
        limit = top_k * CANDIDATES
        queries = []
        spaces = self._spaces_for(kinds)
        # Every space's query vector is asked for before any is awaited: embedders that answer
        # later (Serve replicas) work side by side.
        pending = {space: _submit(self.embedders[space], [query]) for space in spaces}
        for space in spaces:
            space_kinds = tuple(k for k in SPACE_KINDS[space] if k in kinds)
            vector = pending[space].result()[0]
            if space in MULTI_SPACES:  # two stages: pooled vectors find candidates, MaxSim ranks them
                rows = np.asarray(vector, dtype=np.float32)
                queries.append(SpaceQuery(space, rows.tolist(), using=MULTI, kinds=space_kinds, limit=limit,
                                          prefetch=pooled(rows).tolist(), prefetch_limit=max(PREFETCH, limit)))
                continue
            queries.append(SpaceQuery(space, [float(x) for x in vector], kinds=space_kinds, limit=limit))
            if space == "text":
                queries.append(SpaceQuery(space, sparse.query_vector(query), using=SPARSE,
                                          kinds=space_kinds, limit=limit))
        if not queries:
            return []
        return self.store.search(queries, top_k)

    def search_image(self, data: bytes, kinds: Sequence[str] | None = None, top_k: int | None = None) -> list[dict]:
        kinds = check_kinds(kinds)
        top_k = self._top_k(top_k)
        if "clip" not in self.embedders:
            raise UnsupportedQuery("image search needs a CLIP model (MSEARCH_MODELS__CLIP), and none is loaded")
        img = self.settings.image
        prepared = prepare_image(data, max_pixels=img.max_pixels, embed_side=img.embed_side,
                                 thumb_side=img.thumb_side)
        vector = self.embedders["clip"].embed_images([prepared.to_pil()])[0]
        return self._by_example("clip", vector, kinds, top_k)

    def search_audio(self, data: bytes, kinds: Sequence[str] | None = None, top_k: int | None = None) -> list[dict]:
        """Sounds like the first ``MSEARCH_AUDIO__WINDOW_S`` seconds of an uploaded recording."""
        from msearch.media import audio, video

        kinds = check_kinds(kinds)
        top_k = self._top_k(top_k)
        if "clap" not in self.embedders:
            raise UnsupportedQuery("sound search needs a CLAP model (MSEARCH_MODELS__CLAP), and none is loaded")
        samples = audio.query_clip(data, video.ffmpeg_binary(self.settings.video.ffmpeg), audio.CLAP_RATE,
                                   self.settings.audio.window_s)
        vector = self.embedders["clap"].embed_audios([audio.wav_bytes(samples, audio.CLAP_RATE)])[0]
        return self._by_example("clap", vector, kinds, top_k)
