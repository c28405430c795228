"""Query planning and embedding: the same code for the CLI, Serve and tests.

:class:`SearchService` takes its embedders and its store as arguments: in-process objects
in tests and on the CLI, Ray handles wrapped in small adapters under Serve.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Protocol, Sequence

import numpy as np

from msearch import sparse
from msearch.embed import SPACE_KINDS, normalize, pooled
from msearch.errors import BadInput, UnsupportedQuery
from msearch.media.image import prepare_for
from msearch.query import Filters, SearchOptions, check_kinds
from msearch.store.vectors import MULTI, MULTI_SPACES, SPARSE, SpaceQuery, Where

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
    def search(self, queries: list[SpaceQuery], filters: Filters | None = None) -> dict: ...
    def example(self, file_id: str, start_s: float | None = None, page: int | None = None) -> dict: ...


@dataclass(frozen=True)
class _Plan:
    kinds: tuple[str, ...]
    top_k: int
    limit: int  # candidates per ranked list
    where: Where | None


class SearchService:
    """Searches by text, by an example image or sound, or by an indexed file (``similar``); each
    returns a page: ``{results, total, total_exact}`` (see :meth:`_page`)."""

    def __init__(self, embedders: Mapping[str, QueryEmbedder], store: Store, settings):
        self.embedders = embedders
        self.store = store
        self.settings = settings

    # -- one list of results (the shape of earlier versions, kept for callers that page nothing)
    def search_text(self, query: str, kinds: Sequence[str] | None = None, top_k: int | None = None) -> list[dict]:
        return self.text(query, SearchOptions(kinds=kinds, top_k=top_k))["results"]

    def search_image(self, data: bytes, kinds: Sequence[str] | None = None, top_k: int | None = None) -> list[dict]:
        return self.image(data, SearchOptions(kinds=kinds, top_k=top_k))["results"]

    def search_audio(self, data: bytes, kinds: Sequence[str] | None = None, top_k: int | None = None) -> list[dict]:
        return self.audio(data, SearchOptions(kinds=kinds, top_k=top_k))["results"]

    # -- pages ---------------------------------------------------------------------------------
    def text(self, query: str, options: SearchOptions | None = None) -> dict:
        query = (query or "").strip()
        if not query:
            raise BadInput("the query is empty")
        options = options or SearchOptions()
        plan = self._plan(options)
        queries = []
        spaces = self._spaces_for(plan.kinds)
        # Every space's query vector is asked for before any is awaited: embedders that answer
        # later (Serve replicas) work side by side.
        pending = {space: _submit(self.embedders[space], [query]) for space in spaces}
        for space in spaces:
            space_kinds = tuple(k for k in SPACE_KINDS[space] if k in plan.kinds)
            vector = pending[space].result()[0]
            if space in MULTI_SPACES:  # two stages: pooled vectors find candidates, MaxSim ranks them
                rows = np.asarray(vector, dtype=np.float32)
                queries.append(SpaceQuery(space, rows.tolist(), using=MULTI, kinds=space_kinds, limit=plan.limit,
                                          prefetch=pooled(rows).tolist(), prefetch_limit=max(PREFETCH, plan.limit),
                                          where=plan.where))
                continue
            queries.append(SpaceQuery(space, [float(x) for x in vector], kinds=space_kinds, limit=plan.limit,
                                      where=plan.where))
            if space == "text":
                queries.append(SpaceQuery(space, sparse.query_vector(query), using=SPARSE,
                                          kinds=space_kinds, limit=plan.limit, where=plan.where))
        return self._run(queries, options, plan)

    def image(self, data: bytes, options: SearchOptions | None = None) -> dict:
        options = options or SearchOptions()
        plan = self._plan(options)
        if "clip" not in self.embedders:
            raise UnsupportedQuery("image search needs a CLIP model (MSEARCH_MODELS__CLIP), and none is loaded")
        prepared = prepare_for(data, self.settings)
        vector = self.embedders["clip"].embed_images([prepared.to_pil()])[0]
        return self._run(self._by_example("clip", vector, plan), options, plan)

    def audio(self, data: bytes, options: SearchOptions | None = None) -> dict:
        """Sounds like the first ``MSEARCH_AUDIO__WINDOW_S`` seconds of an uploaded recording."""
        from msearch.media import audio, video

        options = options or SearchOptions()
        plan = self._plan(options)
        if "clap" not in self.embedders:
            raise UnsupportedQuery("sound search needs a CLAP model (MSEARCH_MODELS__CLAP), and none is loaded")
        samples = audio.query_clip(data, video.ffmpeg_binary(self.settings.video.ffmpeg), audio.CLAP_RATE,
                                   self.settings.audio.window_s)
        vector = self.embedders["clap"].embed_audios([audio.wav_bytes(samples, audio.CLAP_RATE)])[0]
        return self._run(self._by_example("clap", vector, plan), options, plan)

    def similar(self, file_id: str, start_s: float | None = None, page: int | None = None,
                options: SearchOptions | None = None) -> dict:
        """Results like an indexed file (or one moment or page of it), by the vectors stored for
        it: in each of its spaces the mean of its (the moment's, the page's) vectors. Neither the
        file nor another copy of its content is among the results."""
        options = options or SearchOptions()
        plan = self._plan(options)
        example = self.store.example(file_id, start_s, page)
        where = replace(plan.where or Where(), exclude_hashes=(example["content_hash"],))
        present = self.store.spaces()
        queries = []
        for space, rows in example["vectors"].items():
            space_kinds = tuple(k for k in SPACE_KINDS.get(space, ()) if k in plan.kinds)
            if space not in present or not space_kinds or not rows:
                continue
            vector = normalize(np.asarray(rows, dtype=np.float32).mean(axis=0))[0]
            queries.append(SpaceQuery(space, vector.tolist(), kinds=space_kinds, limit=plan.limit, where=where))
        return self._run(queries, options, plan)

    # -- the steps they share --------------------------------------------------------------------
    def _top_k(self, top_k: int | None) -> int:
        if top_k is None:
            top_k = self.settings.serve.default_top_k
        if not 1 <= top_k <= self.settings.serve.max_top_k:
            raise BadInput(f"top_k must be between 1 and {self.settings.serve.max_top_k}")
        return top_k

    def _plan(self, options: SearchOptions) -> _Plan:
        kinds = check_kinds(options.kinds)
        top_k = self._top_k(options.top_k)
        s = self.settings.serve
        if options.offset + top_k > s.max_results:
            raise BadInput(f"offset + top_k is {options.offset + top_k}; a search pages through its best "
                           f"{s.max_results} results at most (MSEARCH_SERVE__MAX_RESULTS)")
        # The files to rank: this page and those before it; by date, the best sort_window matches.
        window = options.offset + top_k
        if options.sort == "date":
            window = max(window, s.date_sort_window)
        where = options.filters.where() if options.filters else None
        return _Plan(kinds, top_k, window * CANDIDATES, where)

    def _spaces_for(self, kinds: tuple[str, ...]) -> list[str]:
        """Spaces that hold some of ``kinds`` and that we can embed a query for."""
        present = self.store.spaces()
        return [space for space, space_kinds in SPACE_KINDS.items()
                if space in present and space in self.embedders and set(space_kinds) & set(kinds)]

    def _by_example(self, space: str, vector, plan: _Plan) -> list[SpaceQuery]:
        """One space's query by an example's vector (an image for clip, a sound for clap)."""
        space_kinds = tuple(k for k in SPACE_KINDS[space] if k in plan.kinds)
        if space not in self.store.spaces() or not space_kinds:
            return []
        return [SpaceQuery(space, [float(x) for x in vector], kinds=space_kinds, limit=plan.limit, where=plan.where)]

    def _run(self, queries: list[SpaceQuery], options: SearchOptions, plan: _Plan) -> dict:
        found = self.store.search(queries, options.filters) if queries else {"results": [], "exhausted": True}
        return self._page(found, options, plan.top_k)

    def _page(self, found: dict, options: SearchOptions, top_k: int) -> dict:
        """The page asked for of the ranked file results: cut at ``min_relative_score`` of the
        best, ordered (relevance, or newest first), ``offset`` skipped, ``top_k`` kept.
        ``total`` counts the results found; it is exact (``total_exact``) when the store had no
        more candidates to give, otherwise a lower bound that grows as one pages further."""
        results = found["results"]
        if options.min_relative_score and results:
            floor = results[0]["score"] * options.min_relative_score
            results = [r for r in results if r["score"] >= floor]
        if options.sort == "date":
            results = sorted(results, key=lambda r: r["modified"] or "", reverse=True)
        total = len(results)
        if options.offset and options.offset >= total:
            raise BadInput(f"offset {options.offset} is past the results: this search found {total}")
        return {"results": results[options.offset:options.offset + top_k], "total": total,
                "total_exact": bool(found["exhausted"])}
