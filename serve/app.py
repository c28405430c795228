"""Search over HTTP with Ray Serve: a FastAPI ingress and autoscaled query embedders.

:func:`build_app` is the only place that turns these classes into deployments.
``serve run serve/config.yaml`` uses :func:`app_builder`.
"""

import logging
import threading
import time

import ray
from ray import serve

from msearch import ranking
from msearch.auth import TokenFile
from msearch.embed import build_embedder
from msearch.errors import ModelUnavailable, UnsupportedQuery
from msearch.search import SearchService
from msearch.settings import Settings, load_settings
from msearch.store.vectors import open_vector_store, shared_server
from serve import timing
from serve.api import Backend, create_app

log = logging.getLogger(__name__)


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

    def search(self, queries, filters=None):
        with timing.current.part("store"):
            if self.vectors is not None:
                return ranking.search(self.vectors, queries, self.store.files_of,
                                      filters.admits if filters else None)
            return self.store.search(queries, filters)

    def example(self, file_id: str, start_s: float | None = None, page: int | None = None) -> dict:
        with timing.current.part("store"):
            return self.store.example(file_id, start_s, page)


class _Queue:
    """The data dir's control-API queue actor, shared by every ingress replica, called blocking."""

    def __init__(self, actor):
        self.actor = actor

    def submit(self, paths: list[str]) -> None:
        ray.get(self.actor.submit.remote(paths))

    def state(self) -> dict[str, str]:
        return ray.get(self.actor.state.remote())


@serve.ingress()
class SearchAPI:
    """The HTTP ingress: the app of :func:`serve.api.create_app` over the store owner, the query
    embedder replicas (and the small models loaded right here) and the control queue."""

    def __init__(self, settings: Settings, embedders: dict):
        from pipelines.cluster import bind_replica_grpc_to_node_ip
        from pipelines.owner import OwnerClient, get_owner

        bind_replica_grpc_to_node_ip()
        self.settings = settings
        self.store = OwnerClient(get_owner(settings))
        self._embedders = embedders
        self._service: SearchService | None = None
        self._queue: _Queue | None = None
        self._lock = threading.Lock()
        self.backend = Backend(settings=settings, service=self.service, store=self.store, queue=self.queue,
                               token=TokenFile(settings), missing=self.missing)
        self._missing: dict | None = None

    def __serve_build_asgi_app__(self):
        return create_app(self.backend)

    def queue(self) -> _Queue:
        from pipelines.process import get_queue

        with self._lock:
            if self._queue is None:
                self._queue = _Queue(get_queue(self.settings))
            return self._queue

    def missing(self) -> dict:
        """Each model role that is not available, with msearch's message about it."""
        if self._missing is None:
            from msearch.embed import available_roles

            self._missing = available_roles(self.settings)[1]
        return self._missing

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
