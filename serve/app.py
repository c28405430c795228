"""Search over HTTP with Ray Serve: a FastAPI ingress and autoscaled query embedders.

:func:`build_app` is the only place that turns these classes into deployments.
``serve run serve/config.yaml`` uses :func:`app_builder`.
"""

import logging
import os
import threading
import time
from typing import Annotated, Literal

import ray
from fastapi import FastAPI, File, Form, Header, HTTPException, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field
from ray import serve

from msearch import ranking
from msearch.auth import check_bearer, ensure_token, inside_roots
from msearch.embed import build_embedder
from msearch.errors import (
    BadInput, ConfigError, Forbidden, ModelUnavailable, MsearchError, NotFound, Unauthorized, UnsupportedQuery,
)
from msearch.library import file_id_for
from msearch.search import SearchService
from msearch.settings import Settings, load_settings
from msearch.store.vectors import open_vector_store, shared_server
from serve import timing

log = logging.getLogger(__name__)

api = FastAPI(
    title="msearch",
    description="Search your media folders by text or by example image.",
    version="1",
)


class SearchRequest(BaseModel):
    query: str = Field(..., description="What to look for, in any language the models read.")
    kinds: list[str] | None = Field(None, description="Only these kinds: text, image, video, audio, page.")
    top_k: int | None = Field(None, description="How many results (default 10).")


class SearchResult(BaseModel):
    path: str
    file_id: str
    kind: str
    score: float
    start_s: float | None = None
    end_s: float | None = None
    page: int | None = None
    text: str | None = None
    thumbnail: str | None = None


class ProcessRequest(BaseModel):
    path: str = Field(..., min_length=1, max_length=4096, description="A file or folder inside MSEARCH_ROOTS.")


class BatchProcessRequest(BaseModel):
    paths: list[str] = Field(..., min_length=1, max_length=10_000)


class ResetRequest(BaseModel):
    reset_type: Literal["all", "database", "index"]


class SearchResponse(BaseModel):
    query: str | None
    took_ms: float
    results: list[SearchResult]


def http_error(e: MsearchError) -> HTTPException:
    code = {BadInput: 400, Unauthorized: 401, Forbidden: 403, NotFound: 404, UnsupportedQuery: 422,
            ModelUnavailable: 503, ConfigError: 409}
    for cls, status in code.items():
        if isinstance(e, cls):
            return HTTPException(status, str(e))
    return HTTPException(500, str(e))


class QueryEmbedder:
    """One model role (clip, text, clap or colpali) for query embedding; replicas autoscale."""

    def __init__(self, settings: Settings, role: str):
        from pipelines.cluster import bind_replica_grpc_to_node_ip

        bind_replica_grpc_to_node_ip()
        self.embedder, self.error = None, None
        try:
            self.embedder = build_embedder(role, settings)
        except ModelUnavailable as e:
            # Stay up without the model: the ingress asks, and searches skip this space.
            self.error = str(e)
            log.warning("%s Searches skip what it would find.", e)

    def available(self) -> bool:
        return self.embedder is not None

    def _model(self):
        if self.embedder is None:
            raise UnsupportedQuery(self.error)
        return self.embedder

    def embed_texts(self, texts: list[str]) -> list:
        out = self._model().embed_texts(texts)
        return [rows.tolist() for rows in out] if getattr(self.embedder, "multi", False) else out.tolist()

    def embed_images(self, images) -> list[list[float]]:
        return self._model().embed_images(images).tolist()

    def embed_audios(self, clips: list[bytes]) -> list[list[float]]:
        return self._model().embed_audios(clips).tolist()


class _Pending:
    def __init__(self, response):
        self.response = response

    def result(self):
        with timing.current.part("embed"):
            return self.response.result()


class _HandleEmbedder:
    """Calls a QueryEmbedder deployment from a sync endpoint (runs in FastAPI's threadpool)."""

    def __init__(self, handle):
        self.handle = handle

    def submit_texts(self, texts) -> _Pending:
        return _Pending(self.handle.embed_texts.remote(list(texts)))

    def embed_texts(self, texts):
        return self.submit_texts(texts).result()

    def embed_images(self, images):
        return _Pending(self.handle.embed_images.remote(list(images))).result()

    def embed_audios(self, clips):
        return _Pending(self.handle.embed_audios.remote(list(clips))).result()


class _TimedEmbedder:
    """A query model loaded in this replica, its time counted as the request's ``embed``."""

    def __init__(self, embedder):
        self.embedder = embedder

    def __getattr__(self, name: str):
        method = getattr(self.embedder, name)
        if not name.startswith("embed_"):
            return method

        def timed(*args):
            with timing.current.part("embed"):
                return method(*args)

        return timed


class _StoreForSearch:
    """Search calls, timed, with the list of spaces kept for a second: a query needs it first,
    and it changes only when a kind of media is indexed for the first time.

    With the embedded store every search goes to the owner (the one process that opens it).
    With a Qdrant server (``vectors``: this replica's own client) the replica queries Qdrant and
    ranks by itself, and asks the owner only for the catalog rows of the contents it found.
    """

    SPACES_TTL_S = 1.0

    def __init__(self, store, vectors=None):
        self.store = store
        self.vectors = vectors
        self._spaces: tuple[float, dict] | None = None

    def spaces(self) -> dict[str, int]:
        cached = self._spaces
        if cached is None or time.monotonic() - cached[0] > self.SPACES_TTL_S:
            with timing.current.part("store"):
                spaces = self.vectors.refresh_spaces() if self.vectors is not None else self.store.spaces()
                cached = self._spaces = (time.monotonic(), spaces)
        return cached[1]

    def search(self, queries, top_k):
        with timing.current.part("store"):
            if self.vectors is not None:
                return ranking.search(self.vectors, queries, top_k, self.store.files_of)
            return self.store.search(queries, top_k)


@serve.ingress(api)
class SearchAPI:
    """The HTTP ingress: parses requests, runs :class:`SearchService`, maps errors to codes."""

    def __init__(self, settings: Settings, embedders: dict):
        from pipelines.cluster import bind_replica_grpc_to_node_ip
        from pipelines.owner import OwnerClient, get_owner

        bind_replica_grpc_to_node_ip()
        self.settings = settings
        self.store = OwnerClient(get_owner(settings))
        self._embedders = embedders
        self._service: SearchService | None = None
        self._lock = threading.Lock()
        self.token = ensure_token(settings)
        self._queue = None

    def _guard(self, authorization: str | None) -> None:
        try:
            check_bearer(authorization, self.token)
        except MsearchError as e:
            raise http_error(e) from e

    @property
    def queue(self):
        """The data dir's control-API queue, shared by every ingress replica."""
        from pipelines.process import get_queue

        with self._lock:
            if self._queue is None:
                self._queue = get_queue(self.settings)
            return self._queue

    def _accept(self, paths: list[str]) -> list[str]:
        out = []
        for path in paths:
            try:
                resolved = inside_roots(path, self.settings.roots)
            except MsearchError as e:
                raise http_error(e) from e
            if not os.path.lexists(resolved):
                raise HTTPException(404, f"{path}: no such file or folder")
            out.append(resolved)
        return out

    @property
    def service(self) -> SearchService:
        """Built on first use, from a request thread: the constructor runs in Serve's event
        loop, where waiting on the embedders' answers is not allowed."""
        with self._lock:
            if self._service is None:
                available = {role: _HandleEmbedder(h) for role, h in self._embedders.items()
                             if h.available.remote().result(timeout_s=600)}
                for role in self.settings.serve.ingress_models:  # small models, loaded right here
                    try:
                        available[role] = _TimedEmbedder(build_embedder(role, self.settings))
                    except ModelUnavailable as e:
                        log.warning("%s Searches skip what it would find.", e)
                vectors = open_vector_store(self.settings) if shared_server(self.settings) else None
                self._service = SearchService(available, _StoreForSearch(self.store, vectors), self.settings)
            return self._service

    @api.get("/health")
    def health(self) -> dict:
        info = self.store.ping()
        return {"status": "ok", "data_dir": info["data_dir"], "spaces": info["spaces"],
                "query_models": sorted(self.service.embedders)}

    @api.post("/api/v1/search", response_model=SearchResponse)
    def search(self, request: SearchRequest, response: Response) -> dict:
        start = time.perf_counter()
        timing.current.reset()
        try:
            results = self.service.search_text(request.query, request.kinds, request.top_k)
        except MsearchError as e:
            raise http_error(e) from e
        took = time.perf_counter() - start
        response.headers["Server-Timing"] = timing.current.header(took)
        return {"query": request.query, "took_ms": round(took * 1000, 2), "results": results}

    @api.post("/api/v1/search/image", response_model=SearchResponse)
    def search_image(
        self,
        response: Response,
        file: Annotated[UploadFile, File(description="An example image.")],
        kinds: Annotated[list[str] | None, Form()] = None,
        top_k: Annotated[int | None, Form()] = None,
    ) -> dict:
        return self._by_example(self.service.search_image, file, kinds, top_k, response)

    @api.post("/api/v1/search/audio", response_model=SearchResponse)
    def search_audio(
        self,
        response: Response,
        file: Annotated[UploadFile, File(description="An example sound (any format FFmpeg reads); "
                                                     "its first MSEARCH_AUDIO__WINDOW_S seconds are used.")],
        kinds: Annotated[list[str] | None, Form()] = None,
        top_k: Annotated[int | None, Form()] = None,
    ) -> dict:
        return self._by_example(self.service.search_audio, file, kinds, top_k, response)

    def _by_example(self, search, file: UploadFile, kinds, top_k, response: Response) -> dict:
        start = time.perf_counter()
        timing.current.reset()
        data = file.file.read(self.settings.serve.max_upload_bytes + 1)
        if len(data) > self.settings.serve.max_upload_bytes:
            raise HTTPException(413, f"upload over {self.settings.serve.max_upload_bytes} bytes")
        try:
            results = search(data, kinds, top_k)
        except MsearchError as e:
            raise http_error(e) from e
        took = time.perf_counter() - start
        response.headers["Server-Timing"] = timing.current.header(took)
        return {"query": None, "took_ms": round(took * 1000, 2), "results": results}

    @api.get("/api/v1/thumbnails/{thumb_id}", response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    def thumbnail(self, thumb_id: str) -> Response:
        try:
            data = self.store.thumbnail(thumb_id)
        except MsearchError as e:
            raise http_error(e) from e
        return Response(content=data, media_type="image/jpeg",
                        headers={"Cache-Control": "public, max-age=86400, immutable"})

    @api.get("/api/v1/files/{file_id}")
    def file(self, file_id: str) -> dict:
        """A file's catalog row and the units it was cut into (as ``msearch show``)."""
        try:
            return self.store.show(file_id)
        except MsearchError as e:
            raise http_error(e) from e

    @api.post("/api/v1/files/process", status_code=202)
    def process(self, request: ProcessRequest, authorization: Annotated[str | None, Header()] = None) -> dict:
        """Index (or re-index) one file or folder inside MSEARCH_ROOTS. Needs the API token."""
        self._guard(authorization)
        (path,) = self._accept([request.path])
        ray.get(self.queue.submit.remote([path]))
        return {"file_id": file_id_for(path), "path": path, "status": "queued"}

    @api.post("/api/v1/files/batch-process", status_code=202)
    def batch_process(self, request: BatchProcessRequest,
                      authorization: Annotated[str | None, Header()] = None) -> dict:
        """Index several files or folders inside MSEARCH_ROOTS as one run. Needs the API token."""
        self._guard(authorization)
        paths = self._accept(request.paths)
        ray.get(self.queue.submit.remote(paths))
        return {"files": [{"file_id": file_id_for(p), "path": p, "status": "queued"} for p in paths]}

    @api.get("/api/v1/files/process-status/{file_id}")
    def process_status(self, file_id: str) -> dict:
        """``queued`` or ``processing`` while the control API works on it, then the file's status
        (``indexed``, ``failed``, ``skipped``, ``pending``) with its error."""
        waiting = {file_id_for(p): (p, s) for p, s in ray.get(self.queue.state.remote()).items()}
        if file_id in waiting:
            path, state = waiting[file_id]
            return {"file_id": file_id, "path": path, "status": state, "progress": 0.0, "error": None}
        try:
            row = self.store.show(file_id)
        except MsearchError as e:
            raise http_error(e) from e
        done = row["status"] in ("indexed", "failed", "skipped")
        return {"file_id": file_id, "path": row["path"], "status": row["status"],
                "progress": 1.0 if done else 0.0, "error": row["error"]}

    @api.post("/api/v1/system/reset")
    def reset(self, request: ResetRequest, authorization: Annotated[str | None, Header()] = None) -> dict:
        """``index``: drop all vectors (files are indexed again by the next run); ``database``: also
        forget all files; ``all``: a data dir as new. Needs the API token."""
        self._guard(authorization)
        try:
            return self.store.reset(request.reset_type)
        except MsearchError as e:
            raise http_error(e) from e

    @api.get("/api/v1/verify")
    def verify(self) -> dict:
        """Do the catalog and the vectors agree (as ``msearch verify``)?"""
        return self.store.verify()

    @api.get("/api/v1/status")
    def status(self) -> dict:
        """Files per kind and status, vector points per space, failures (as ``msearch status``)."""
        return self.store.status()


def build_app(settings: Settings):
    """The Serve application for ``settings``: the only place deployments are declared."""
    from msearch.embed import SPACE_KINDS

    s = settings.serve
    embedders = {}
    for role in SPACE_KINDS:
        if role in s.ingress_models:
            continue
        deployment = serve.deployment(
            QueryEmbedder,
            name=f"embed-{role}",
            autoscaling_config={"min_replicas": s.min_replicas, "max_replicas": s.max_replicas,
                                "target_ongoing_requests": s.target_ongoing_requests},
            ray_actor_options={"num_cpus": s.embedder_num_cpus, "num_gpus": s.embedder_num_gpus},
        )
        embedders[role] = deployment.bind(settings, role)
    ingress = serve.deployment(
        SearchAPI,
        name="search-api",
        num_replicas=s.ingress_replicas,
        ray_actor_options={"num_cpus": s.ingress_num_cpus},
        max_ongoing_requests=64,
    )
    return ingress.bind(settings, embedders)


def app_builder(args: dict):
    """Entry for ``serve run serve/config.yaml``: args override MSEARCH_* settings."""
    return build_app(load_settings(**(args or {})))
