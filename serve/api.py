"""The HTTP API as a plain FastAPI app: :func:`create_app` over a :class:`Backend`.

Nothing here knows Ray. :mod:`serve.app` builds the Backend from Ray handles (the store owner,
query embedder replicas, the control queue) inside a Serve replica; tests build it from a
:class:`~msearch.library.Library` and fake embedders, and drive the app with httpx.
Domain errors become HTTP codes in one place (:func:`status_for`).
"""

from __future__ import annotations

import json
import logging
import mimetypes
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

from fastapi import FastAPI, File, Form, Header, Path as PathParam, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, ValidationError

from msearch.auth import check_bearer, inside_roots
from msearch.errors import (
    BadInput, ConfigError, Conflict, DataDirBusy, DiskFull, Forbidden, MissingDependency, ModelUnavailable, MsearchError,
    NotFound, NotRunning, Unauthorized, UnsupportedQuery,
)
from msearch.ids import file_id_for
from msearch.query import Filters, SearchOptions, Sort, describe
from serve import timing

log = logging.getLogger(__name__)

WEB = Path(__file__).resolve().parent / "web"  # the search page: plain HTML, CSS and JS modules
# The page loads nothing from elsewhere and runs no inline script or style.
CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; script-src 'self'; "
       "style-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")

STATUS = [(BadInput, 400), (Unauthorized, 401), (Forbidden, 403), (NotFound, 404), (ConfigError, 409),
          (Conflict, 409), (UnsupportedQuery, 422), (ModelUnavailable, 503), (MissingDependency, 503),
          (DataDirBusy, 503), (NotRunning, 503), (DiskFull, 507)]
ERRORS = {400: {"description": "Bad query, filter or upload"}, 404: {"description": "Not in the index"},
          422: {"description": "Malformed request, or no loaded model can answer it"}}
EMBEDDING_ROLES = ("text", "clip", "clap")  # roles with one vector per text input


def status_for(e: MsearchError) -> int:
    for cls, status in STATUS:
        if isinstance(e, cls):
            return status
    return 500


@dataclass
class Backend:
    """What the routes use. ``service()`` builds the SearchService on first use (Serve calls
    the constructor in its event loop, where waiting on other replicas is not allowed);
    ``store`` is the Library or its owner actor's client; ``queue()`` the control-API queue
    (``submit(paths)``, ``state()``)."""

    settings: Any
    service: Callable[[], Any]
    store: Any
    queue: Callable[[], Any]
    token: Callable[[], str]  # the API token as it is now (it can be rotated while serving)
    missing: Callable[[], dict] = dict  # role -> why its model is not loaded (for the status page)
    lock: threading.Lock = field(default_factory=threading.Lock)


# -- request and response models --------------------------------------------------------------
class SearchRequest(SearchOptions):
    query: str = Field(..., description="What to look for, in any language the models read.")


class SimilarRequest(SearchOptions):
    file_id: str = Field(..., min_length=1, max_length=64, description="An indexed file (see file_id in results).")
    start_s: float | None = Field(None, ge=0, description="Like this moment of a video or recording.")
    page: int | None = Field(None, ge=1, description="Like this page of a document.")


class Moment(BaseModel):
    start_s: float | None = None
    end_s: float | None = None
    page: int | None = None
    score: float
    text: str | None = None
    thumbnail: str | None = None


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
    modified: str | None = Field(None, description="The file's modification time, ISO 8601 (UTC).")
    size: int | None = None
    duration_s: float | None = None
    moments: list[Moment] = Field(default_factory=list, description="Every matching moment of the file, best first.")


class SearchResponse(BaseModel):
    query: str | None
    took_ms: float
    total: int = Field(..., description="Results found; exact when total_exact, else a lower bound.")
    total_exact: bool
    offset: int
    results: list[SearchResult]


class ProcessRequest(BaseModel):
    path: str = Field(..., min_length=1, max_length=4096, description="A file or folder inside MSEARCH_ROOTS.")


class BatchProcessRequest(BaseModel):
    paths: list[str] = Field(..., min_length=1, max_length=10_000)


class ResetRequest(BaseModel):
    reset_type: Literal["all", "database", "index"]


class EmbeddingRequest(BaseModel):
    model: str = Field(..., description="A role (text, clip, clap) or that role's model id.")
    input: str | list[str] = Field(..., description="A text, or a list of texts.")
    encoding_format: Literal["float"] = "float"
    user: str | None = None


# Search options as form fields, beside an upload.
FormKinds = Annotated[list[str] | None, Form(description="Only these kinds (repeat the field).")]
FormTopK = Annotated[int | None, Form()]
FormOffset = Annotated[int | None, Form(ge=0)]
FormSort = Annotated[Sort | None, Form()]
FormScore = Annotated[float | None, Form(ge=0, le=1)]
FormFilters = Annotated[str | None, Form(description='Filters as JSON, e.g. {"path_prefix": "/media/2024"}.')]


# -- the app ----------------------------------------------------------------------------------
def create_app(backend: Backend) -> FastAPI:
    settings = backend.settings
    app = FastAPI(title="msearch", version="1",
                  description="Search your media folders by text, by an example image or sound, or by a file.")

    @app.exception_handler(MsearchError)
    async def domain_error(request: Request, e: MsearchError):
        status = status_for(e)
        if status == 500:
            log.error("unexpected error on %s: %s", request.url.path, e)
        return JSONResponse({"detail": str(e)}, status_code=status)

    def guard(authorization: str | None) -> None:
        check_bearer(authorization, backend.token())

    def page(search: Callable[[], dict], query: str | None, offset: int, response: Response) -> dict:
        start = time.perf_counter()
        timing.current.reset()
        found = search()
        took = time.perf_counter() - start
        response.headers["Server-Timing"] = timing.current.header(took)
        return {"query": query, "took_ms": round(took * 1000, 2), "offset": offset, **found}

    def form_options(kinds, top_k, offset, sort, min_relative_score, filters) -> SearchOptions:
        """Search options sent as form fields (with an upload); ``filters`` is JSON text."""
        try:
            parsed = Filters.model_validate_json(filters) if filters else None
            return SearchOptions(kinds=kinds or None, top_k=top_k, offset=offset or 0, sort=sort or "relevance",
                                 min_relative_score=min_relative_score, filters=parsed)
        except ValidationError as e:
            raise BadInput(describe(e)) from e

    def upload(file: UploadFile) -> bytes:
        limit = settings.serve.max_upload_bytes
        size = getattr(file, "size", None)
        if size is not None and size > limit:
            raise _TooLarge(limit)
        data = file.file.read(limit + 1)
        if len(data) > limit:
            raise _TooLarge(limit)
        return data

    @app.exception_handler(_TooLarge)
    async def too_large(request: Request, e: _TooLarge):
        return JSONResponse({"detail": str(e)}, status_code=413)

    @app.exception_handler(_RangeRefused)
    async def range_refused(request: Request, e: _RangeRefused):
        return JSONResponse({"detail": str(e)}, status_code=416, headers={"Content-Range": f"bytes */{e.size}"})

    app.add_middleware(_UploadLimit, limit=settings.serve.max_upload_bytes)

    @app.get("/health")
    def health() -> dict:
        info = backend.store.ping()
        return {"status": "ok", "data_dir": info["data_dir"], "spaces": info["spaces"],
                "query_models": sorted(backend.service().embedders)}

    @app.post("/api/v1/search", response_model=SearchResponse, responses=ERRORS)
    def search(request: SearchRequest, response: Response) -> dict:
        options = SearchOptions(**request.model_dump(exclude={"query"}))
        return page(lambda: backend.service().text(request.query, options), request.query, request.offset, response)

    @app.post("/api/v1/search/image", response_model=SearchResponse, responses={**ERRORS, 413: {}})
    def search_image(response: Response, file: Annotated[UploadFile, File(description="An example image.")],
                     kinds: FormKinds = None, top_k: FormTopK = None, offset: FormOffset = None,
                     sort: FormSort = None, min_relative_score: FormScore = None,
                     filters: FormFilters = None) -> dict:
        options = form_options(kinds, top_k, offset, sort, min_relative_score, filters)
        data = upload(file)
        return page(lambda: backend.service().image(data, options), None, options.offset, response)

    @app.post("/api/v1/search/audio", response_model=SearchResponse, responses={**ERRORS, 413: {}})
    def search_audio(response: Response,
                     file: Annotated[UploadFile, File(description="An example sound (any format FFmpeg reads); its "
                                                                  "first MSEARCH_AUDIO__WINDOW_S seconds are used.")],
                     kinds: FormKinds = None, top_k: FormTopK = None, offset: FormOffset = None,
                     sort: FormSort = None, min_relative_score: FormScore = None,
                     filters: FormFilters = None) -> dict:
        options = form_options(kinds, top_k, offset, sort, min_relative_score, filters)
        data = upload(file)
        return page(lambda: backend.service().audio(data, options), None, options.offset, response)

    @app.post("/api/v1/search/similar", response_model=SearchResponse, responses=ERRORS)
    def search_similar(request: SimilarRequest, response: Response) -> dict:
        """Results like an indexed file, or one moment (``start_s``) or page of it, by its stored
        vectors: nothing is uploaded or embedded again. The file is not among its results."""
        options = SearchOptions(**request.model_dump(exclude={"file_id", "start_s", "page"}))
        return page(lambda: backend.service().similar(request.file_id, request.start_s, request.page, options),
                    None, request.offset, response)

    @app.get("/api/v1/thumbnails/{thumb_id}", response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}, 404: {}})
    def thumbnail(thumb_id: str) -> Response:
        return Response(content=backend.store.thumbnail(thumb_id), media_type="image/jpeg",
                        headers={"Cache-Control": "public, max-age=86400, immutable"})

    @app.get("/api/v1/files/{file_id}", responses={404: {}})
    def file(file_id: str) -> dict:
        """A file's catalog row and the units it was cut into (as ``msearch show``)."""
        return backend.store.show(file_id)

    @app.get("/api/v1/files/{file_id}/content", response_class=FileResponse,
             responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "Partial content"},
                        404: {}, 409: {"description": "The file changed since it was indexed"},
                        416: {"description": "Range not satisfiable"}})
    def content(file_id: str, range: Annotated[str | None, Header()] = None) -> FileResponse:
        """The original file of an indexed file, with HTTP range requests (a ``<video>`` seeks);
        at most 16 ranges a request, none overlapping another."""
        row, path = _current_file(backend, file_id)
        fd, st = _open_checked(backend, row, path)
        try:
            check_ranges(range, st.st_size)
        except BaseException:
            os.close(fd)
            raise
        return _OpenedFile(fd, path, media_type=media_type(row), filename=None,
                           headers={"Cache-Control": "private, max-age=60"}, stat_result=st)

    @app.get("/api/v1/files/{file_id}/clip", response_class=FileResponse,
             responses={200: {"content": {"video/webm": {}, "video/mp4": {}}}, 206: {}, 400: {}, 404: {}, 409: {}})
    def clip(file_id: str, start_s: Annotated[float, Query(ge=0)], end_s: Annotated[float, Query(gt=0)],
             format: Annotated[Literal["webm", "mp4"], Query()] = "webm") -> FileResponse:
        """A short cut of a video or recording that any browser plays (VP9/Opus WebM or H.264/AAC
        MP4), for sources a browser cannot decode; made once and cached."""
        from msearch.media import clips
        from msearch.media.video import ffmpeg_binary

        row, path = _current_file(backend, file_id)
        if row["kind"] not in ("video", "audio"):
            raise BadInput(f"{row['path']} is not a video or a recording")
        if end_s <= start_s:
            raise BadInput("end_s must be after start_s")
        longest = settings.serve.max_clip_s
        if end_s - start_s > longest:
            raise BadInput(f"a clip is at most {longest:g} s long (MSEARCH_SERVE__MAX_CLIP_S)")
        duration = (_media(row) or {}).get("duration_s")
        if duration and start_s >= duration:
            raise BadInput(f"start_s is past the end of the recording ({duration:.1f} s)")
        cache = settings.data_dir / "cache" / "clips"
        out = clips.clip_path(cache, row["content_hash"], start_s, end_s, format)
        clips.trim_cache(cache, max(0, settings.serve.clip_cache - 1))  # first: never the cut this request serves
        clips.make_clip(Path(path), out, start_s, end_s, format, ffmpeg_binary(settings.video.ffmpeg),
                        audio_only=row["kind"] == "audio")
        return FileResponse(out, media_type=clips.FORMATS[format][0] if row["kind"] == "video"
                            else clips.FORMATS[format][0].replace("video/", "audio/"),
                            headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/v1/files/{file_id}/pages/{number}", response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}, 400: {}, 404: {}, 409: {}})
    def page_image(file_id: str, number: Annotated[int, PathParam(ge=1, le=100_000)],
                   side: Annotated[int, Query(ge=64, le=4096)] = 1024) -> Response:
        """The image of one page of an indexed PDF (``side``: its short side in pixels)."""
        from msearch.media.document import render_page

        row, path = _current_file(backend, file_id)
        if row["kind"] != "page":
            raise BadInput(f"{row['path']} is not a PDF document")
        return Response(render_page(Path(path), number, side), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})

    @app.post("/api/v1/files/process", status_code=202, responses={401: {}, 403: {}, 404: {}})
    def process(request: ProcessRequest, authorization: Annotated[str | None, Header()] = None) -> dict:
        """Index (or re-index) one file or folder inside MSEARCH_ROOTS. Needs the API token."""
        guard(authorization)
        (path,) = _accept(settings, [request.path])
        backend.queue().submit([path])
        return {"file_id": file_id_for(path), "path": path, "status": "queued"}

    @app.post("/api/v1/files/batch-process", status_code=202, responses={401: {}, 403: {}, 404: {}})
    def batch_process(request: BatchProcessRequest, authorization: Annotated[str | None, Header()] = None) -> dict:
        """Index several files or folders inside MSEARCH_ROOTS as one run. Needs the API token."""
        guard(authorization)
        paths = _accept(settings, request.paths)
        backend.queue().submit(paths)
        return {"files": [{"file_id": file_id_for(p), "path": p, "status": "queued"} for p in paths]}

    @app.get("/api/v1/files/process-status/{file_id}", responses={404: {}})
    def process_status(file_id: str) -> dict:
        """``queued`` or ``processing`` while the control API works on it, then the file's status
        (``indexed``, ``failed``, ``skipped``, ``pending``) with its error."""
        waiting = {file_id_for(p): (p, s) for p, s in backend.queue().state().items()}
        if file_id in waiting:
            path, state = waiting[file_id]
            return {"file_id": file_id, "path": path, "status": state, "progress": 0.0, "error": None}
        row = backend.store.show(file_id)
        done = row["status"] in ("indexed", "failed", "skipped")
        return {"file_id": file_id, "path": row["path"], "status": row["status"],
                "progress": 1.0 if done else 0.0, "error": row["error"]}

    @app.post("/api/v1/system/reset", responses={401: {}, 409: {}})
    def reset(request: ResetRequest, authorization: Annotated[str | None, Header()] = None) -> dict:
        """``index``: drop all vectors (files are indexed again by the next run); ``database``: also
        forget all files; ``all``: a data dir as new. Needs the API token."""
        guard(authorization)
        return backend.store.reset(request.reset_type)

    @app.get("/api/v1/verify")
    def verify() -> dict:
        """Do the catalog and the vectors agree (as ``msearch verify``)?"""
        return backend.store.verify()

    @app.get("/api/v1/status")
    def status() -> dict:
        """Files per kind and status, vector points per space, failures (as ``msearch status``);
        also the query models loaded, the models missing with the reason, the index runs in
        progress and what the control API has queued."""
        return {**backend.store.status(), "query_models": sorted(backend.service().embedders),
                "missing_models": backend.missing(), "queue": backend.queue().state()}

    # -- the web page ------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def page_shell() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html; charset=utf-8",
                            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache",
                                     "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    app.mount("/static", _Static(directory=WEB), name="static")

    # -- OpenAI-compatible embeddings, from the loaded query models -----------------------------
    def roles() -> dict[str, str]:
        """role -> model id, for the loaded query models with one vector per text."""
        loaded = backend.service().embedders
        return {role: getattr(settings.models, role) for role in EMBEDDING_ROLES if role in loaded}

    @app.get("/v1/models")
    def models() -> dict:
        """The query models loaded, in OpenAI's list format (``id``: the role; ``model``: its id)."""
        return {"object": "list", "data": [{"id": role, "object": "model", "owned_by": "msearch", "model": model}
                                           for role, model in roles().items()]}

    @app.post("/v1/embeddings", responses={400: {}, 404: {"description": "No such model loaded"}})
    def embeddings(request: EmbeddingRequest) -> dict:
        """OpenAI's embeddings API over msearch's query models (``model``: a role or its model id)."""
        loaded = roles()
        role = request.model if request.model in loaded else next(
            (r for r, model in loaded.items() if model == request.model), None)
        if role is None:
            raise NotFound(f"no model {request.model!r} is loaded; loaded: {sorted(loaded)}")
        texts = [request.input] if isinstance(request.input, str) else list(request.input)
        if not texts or len(texts) > 256 or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise BadInput("input must be a text or a list of 1 to 256 non-empty texts")
        if sum(len(t) for t in texts) > 1_000_000:
            raise BadInput("input is over 1,000,000 characters")
        vectors = backend.service().embedders[role].embed_texts(texts)
        tokens = sum(len(t.split()) for t in texts)
        return {"object": "list", "model": loaded[role],
                "data": [{"object": "embedding", "index": i, "embedding": [float(x) for x in v]}
                         for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    return app


class _Static(StaticFiles):
    """The page's files, with the same safety headers as the page."""

    async def get_response(self, path: str, scope):
        response = await super().get_response(path, scope)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-cache"
        return response


MAX_RANGES = 16


class _RangeRefused(Exception):
    def __init__(self, message: str, size: int):
        super().__init__(message)
        self.size = size


def check_ranges(header: str | None, size: int) -> None:
    """Refuse a Range header asking for many ranges (416) or overlapping ones (416), or not in
    the ``bytes=`` form (400), before a byte is read; Starlette serves the rest."""
    if not header:
        return
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        raise BadInput("malformed Range header: only bytes=START-END[, ...] is understood")
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) > MAX_RANGES:
        raise _RangeRefused(f"{len(parts)} ranges asked for; at most {MAX_RANGES}", size)
    spans = []
    for part in parts:
        first, dash, last = part.partition("-")
        if not dash or not (first.strip().isdigit() or (not first.strip() and last.strip().isdigit())) or \
                (last.strip() and not last.strip().isdigit()):
            raise BadInput(f"malformed range {part!r} in the Range header")
        if first.strip():
            start = int(first)
            end = int(last) if last.strip() else size - 1
            if start >= size:
                raise _RangeRefused(f"range {part!r} starts past the end of the file ({size} bytes)", size)
        else:  # the last N bytes
            start, end = max(0, size - int(last)), size - 1
        if end < start:
            raise BadInput(f"malformed range {part!r}: it ends before it starts")
        spans.append((start, min(end, size - 1)))
    spans.sort()
    for (_, a_end), (b_start, _) in zip(spans, spans[1:]):
        if b_start <= a_end:
            raise _RangeRefused("overlapping ranges asked for", size)


class _UploadLimit:
    """ASGI middleware: an upload longer than the limit is answered 413 as soon as that is
    known — from its Content-Length before the body is read, else as its bytes arrive."""

    SLACK = 64 * 1024  # the multipart envelope around the file

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit + self.SLACK

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(send)
        seen, started, refused = 0, False, False

        async def counted():
            nonlocal seen, started, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # Answer now, and tell the app the client went: it stops reading the body.
                    refused = True
                    if not started:
                        started = True
                        await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def tracked(message):
            nonlocal started
            if refused:
                return  # the 413 was sent; what the app answers to a "disconnect" is dropped
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, tracked)

    async def _refuse(self, send):
        body = json.dumps({"detail": str(_TooLarge(self.limit - self.SLACK))}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"upload over {limit} bytes (MSEARCH_SERVE__MAX_UPLOAD_BYTES)")


def _media(row: dict) -> dict | None:
    import json

    media = row.get("media")
    try:
        return json.loads(media) if isinstance(media, str) else media
    except ValueError:
        return None


def _current_file(backend: Backend, file_id: str) -> tuple[dict, str]:
    """An indexed file's row and its path, if the file on disk is still the one indexed: a regular
    file (not a link put in its place) of the same size and modification time."""
    row = backend.store.indexed_file(file_id)
    path = row["path"]
    roots = backend.settings.roots
    if roots and not any(path == r.rstrip("/") or path.startswith(r.rstrip("/") + "/")
                         for r in (os.path.realpath(x) for x in roots)):
        raise NotFound(f"{path} is outside the folders msearch serves (MSEARCH_ROOTS)")
    try:
        st = os.lstat(path)
    except OSError as e:
        raise NotFound(f"{path} is no longer on disk") from e
    import stat

    linked = not backend.settings.index.follow_symlinks and os.path.realpath(path) != path
    if not stat.S_ISREG(st.st_mode) or linked:
        raise Conflict(f"{path} is no longer the regular file that was indexed (a link or a moved folder "
                       "stands in its place); index it again")
    if _changed(st, row):
        raise Conflict(f"{path} changed since it was indexed; index it again")
    return row, path


def _changed(st: os.stat_result, row: dict) -> bool:
    """Whether the file ``st`` describes is not the size and time of the indexed ``row``."""
    return st.st_size != row["size"] or abs(st.st_mtime - (row["mtime"] or 0.0)) > 1e-3


def _open_checked(backend: Backend, row: dict, path: str) -> tuple[int, os.stat_result]:
    """Open the file :func:`_current_file` approved and check the open file again (a regular
    file, the same size and time, and, unless links are followed, at the same real path): what
    is served is read from this open file, so a link swapped in after the checks is never read."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise Conflict(f"{path} is no longer the regular file that was indexed; index it again") from e
    try:
        st = os.fstat(fd)
        moved = not backend.settings.index.follow_symlinks and os.path.exists(f"/proc/self/fd/{fd}") and \
            os.readlink(f"/proc/self/fd/{fd}") != path
        if not stat.S_ISREG(st.st_mode) or moved or _changed(st, row):
            raise Conflict(f"{path} is no longer the regular file that was indexed; index it again")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


class _OpenedFile(FileResponse):
    """A file response read from an open file (through ``/proc/self/fd`` where there is one),
    which it closes when the response ends, sent whole or not."""

    def __init__(self, fd: int, path: str, **kwargs):
        self._fd = fd
        opened = f"/proc/self/fd/{fd}"
        super().__init__(opened if os.path.exists(opened) else path, **kwargs)

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):  # never sent (an error on the way out): the file is closed all the same
        self._close()


_TYPES = {".mkv": "video/x-matroska", ".webm": "video/webm", ".opus": "audio/ogg", ".ogg": "audio/ogg",
          ".m4a": "audio/mp4", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".wav": "audio/wav",
          ".avi": "video/x-msvideo", ".md": "text/markdown", ".pdf": "application/pdf"}


def media_type(row: dict) -> str:
    suffix = Path(row["path"]).suffix.lower()
    guessed = _TYPES.get(suffix) or mimetypes.guess_type(row["path"])[0]
    if guessed:
        return guessed
    return {"image": "image/jpeg", "video": "video/mp4", "audio": "audio/mpeg", "page": "application/pdf",
            "text": "text/plain; charset=utf-8"}.get(row["kind"], "application/octet-stream")


def _accept(settings, paths: list[str]) -> list[str]:
    out = []
    for path in paths:
        resolved = inside_roots(path, settings.roots)
        if not os.path.lexists(resolved):
            raise NotFound(f"{path}: no such file or folder")
        out.append(resolved)
    return out
