"""One way for a command to reach an index, wherever it lives: :func:`open_index`.

* :class:`HttpIndex` — a running ``msearch serve`` of the data dir, over its HTTP API;
* a :class:`StoreIndex` over the store owner actor of a running msearch (through Ray; built by
  :func:`pipelines.client.ray_index`, since the core never imports Ray);
* a :class:`StoreIndex` over a :class:`~msearch.library.Library` opened in this process (nobody
  else owns the data dir).

All three answer the same calls with the same shapes (a test holds them to it). Query models
load only when a search needs them — a text query over an index of text loads the text model
and nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Callable, Protocol

from urllib.parse import quote

from msearch.ids import file_id_for
from msearch.query import SearchOptions

log = logging.getLogger(__name__)


class Index(Protocol):
    def search(self, query: str | None, options: SearchOptions, image: bytes | None = None,
               audio: bytes | None = None) -> dict: ...
    def similar(self, file_id: str, start_s: float | None, page: int | None, options: SearchOptions) -> dict: ...
    def file_id(self, path: str) -> str: ...
    def show(self, key: str) -> dict: ...
    def status(self) -> dict: ...
    def verify(self) -> dict: ...
    def close(self) -> None: ...


class LazyEmbedders(Mapping):
    """The query models of the spaces in the index whose weights are there: listed without
    loading any, each loaded on first use."""

    def __init__(self, settings, spaces: Callable[[], dict]):
        self.settings = settings
        self._spaces = spaces
        self._roles: dict[str, str] | None = None
        self._loaded: dict = {}

    def _available(self) -> dict[str, str]:
        if self._roles is None:
            from msearch.embed import available_roles

            self._roles, missing = available_roles(self.settings, tuple(self._spaces()))
            for message in missing.values():
                log.warning("%s", message)
        return self._roles

    def __getitem__(self, role: str):
        if role not in self._loaded:
            if role not in self._available():
                raise KeyError(role)
            from msearch.embed import build_embedder

            self._loaded[role] = build_embedder(role, self.settings)
        return self._loaded[role]

    def __iter__(self):
        return iter(self._available())

    def __len__(self) -> int:
        return len(self._available())

    def __contains__(self, role) -> bool:
        return role in self._available()

    def close(self) -> None:
        for embedder in self._loaded.values():
            embedder.close()
        self._loaded.clear()


class StoreIndex:
    """An index reached through its store: a Library in this process, or the owner actor's
    client; searches run here with this process's query models."""

    def __init__(self, settings, store, cleanup: list[Callable[[], None]] | None = None):
        from msearch.search import SearchService

        self.settings = settings
        self.store = store
        self.embedders = LazyEmbedders(settings, store.spaces)
        self.service = SearchService(self.embedders, store, settings)
        self._cleanup = [self.embedders.close, *(cleanup or [])]

    def search(self, query, options, image=None, audio=None) -> dict:
        if image is not None:
            return self.service.image(image, options)
        if audio is not None:
            return self.service.audio(audio, options)
        return self.service.text(query, options)

    def similar(self, file_id, start_s, page, options) -> dict:
        return self.service.similar(file_id, start_s, page, options)

    def file_id(self, path: str) -> str:
        return self.store.show(path)["file_id"]

    def show(self, key: str) -> dict:
        return self.store.show(key)

    def status(self) -> dict:
        return self.store.status()

    def verify(self) -> dict:
        return self.store.verify()

    def close(self) -> None:
        for fn in reversed(self._cleanup):
            fn()


class HttpIndex:
    """A running ``msearch serve``, over its HTTP API."""

    def __init__(self, url: str):
        from msearch.http_client import HttpClient

        self.url = url
        self.http = HttpClient(url)

    def healthy(self) -> bool:
        return self.http.healthy()

    def search(self, query, options, image=None, audio=None) -> dict:
        if image is None and audio is None:
            return self.http.call("POST", "/api/v1/search", {"query": query, **options.model_dump(mode="json")})
        fields = options.model_dump(mode="json", exclude={"filters"})
        if options.filters:
            fields["filters"] = options.filters.model_dump(mode="json", exclude_none=True)
        return self.http.upload("image" if image is not None else "audio",
                                image if image is not None else audio, fields)

    def similar(self, file_id, start_s, page, options) -> dict:
        return self.http.call("POST", "/api/v1/search/similar",
                              {"file_id": file_id, "start_s": start_s, "page": page, **options.model_dump(mode="json")})

    def file_id(self, path: str) -> str:
        return file_id_for(path)

    def show(self, key: str) -> dict:
        return self.http.call("GET", f"/api/v1/files/{quote(file_id_for(key) if key.startswith('/') else key, safe='')}")

    def status(self) -> dict:
        return self.http.call("GET", "/api/v1/status")

    def verify(self) -> dict:
        return self.http.call("GET", "/api/v1/verify")

    def close(self) -> None:
        self.http.close()


def local_index(settings) -> StoreIndex:
    """The data dir's stores opened in this process (its lock taken: nobody else may open them)."""
    from msearch.library import Library
    from msearch.owner import OwnerLock

    lock = OwnerLock(settings).acquire()
    try:
        library = Library(settings)
    except BaseException:
        lock.release()
        raise
    return StoreIndex(settings, library, [lock.release, library.close])


def open_index(settings) -> Index:
    """The running msearch's HTTP app, else its store owner through Ray, else this process."""
    from msearch.owner import running_owner

    info = running_owner(settings)
    if info and info.get("http"):
        index = HttpIndex(info["http"])
        if index.healthy():
            return index
        index.close()
    if info is not None:
        from pipelines.client import ray_index

        return ray_index(settings)
    return local_index(settings)
