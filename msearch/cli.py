"""The ``msearch`` command: index, search, show, status, serve.

Commands use the running msearch of the data dir when there is one (its HTTP app, else its
Ray cluster and store owner) and otherwise start what they need. Exit codes: 0 done (an
index run that completed, even with failed files), 1 nothing found / not found, 2 the command
itself could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from msearch.errors import MsearchError, NotFound
from msearch.settings import Settings, load_settings, ray_environment

log = logging.getLogger("msearch")

EXIT_OK, EXIT_EMPTY, EXIT_ERROR = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    ray_environment()
    if not args.command:
        parser.print_help()
        return EXIT_ERROR
    try:
        settings = load_settings()
    except Exception as e:  # pydantic's ValidationError names the bad variable
        print(f"msearch: invalid settings: {e}", file=sys.stderr)
        return EXIT_ERROR
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s",
    )
    for noisy in ("infinity_emb", "sentence_transformers", "httpx", "ray", "filelock", "msearch.embed"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return args.func(settings, args)
    except MsearchError as e:
        print(f"msearch: {e}", file=sys.stderr)
        return EXIT_EMPTY if isinstance(e, NotFound) else EXIT_ERROR
    except KeyboardInterrupt:
        print("msearch: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="msearch", description="Multimodal search over your media folders.")
    p.add_argument("-v", "--verbose", action="store_true", help="log what the workers do")
    sub = p.add_subparsers(dest="command")

    s = sub.add_parser("index", help="index files and folders (Ray Data pipeline)")
    s.add_argument("paths", nargs="+", metavar="PATH")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=cmd_index)

    s = sub.add_parser("search", help="search by text, or by an example image or sound")
    s.add_argument("text", nargs="?", metavar="TEXT")
    s.add_argument("--image", type=Path, metavar="FILE", help="search by this image instead of text")
    s.add_argument("--audio", type=Path, metavar="FILE",
                   help="search by this sound instead of text (its first MSEARCH_AUDIO__WINDOW_S seconds)")
    s.add_argument("--kind", action="append", dest="kinds", metavar="K",
                   help="only results of this kind (text, image, video, audio, page); repeatable")
    s.add_argument("--top-k", type=int, default=None, metavar="N")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("show", help="what msearch knows and extracted of one file")
    s.add_argument("key", metavar="PATH|FILE_ID")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)

    s = sub.add_parser("watch", help="index folders, then keep the index equal to them as they change")
    s.add_argument("paths", nargs="+", metavar="PATH")
    s.add_argument("--poll", type=float, default=None, metavar="SECONDS",
                   help="poll every SECONDS instead of file-system events (network mounts)")
    s.add_argument("--debounce", type=float, default=2.0, metavar="SECONDS",
                   help="index a batch once the folders have been quiet this long (default 2)")
    s.add_argument("--reconcile", type=float, default=600.0, metavar="SECONDS",
                   help="a full scan this often, for events that were missed (default 600)")
    s.add_argument("--json", action="store_true", help="one JSON summary per batch")
    s.set_defaults(func=cmd_watch)

    s = sub.add_parser("verify", help="check that the catalog and the vectors agree")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("status", help="files per kind and status, points per space, failures")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("serve", help="serve search over HTTP (Ray Serve) until interrupted")
    s.add_argument("--host", default=None)
    s.add_argument("--port", type=int, default=None)
    s.set_defaults(func=cmd_serve)
    return p


# -- index --------------------------------------------------------------------------------
def cmd_index(settings: Settings, args) -> int:
    from msearch.files import check_roots

    check_roots(args.paths)  # a missing folder is an error before anything starts
    from pipelines.cluster import connect, stop_local
    from pipelines.index import format_summary, run_index

    with _stdout_for_results(args.json) as out:
        started = connect(settings, verbose=args.verbose)
        try:
            summary = run_index(settings, args.paths, progress=not args.json, verbose=args.verbose)
        finally:
            if started:
                stop_local(settings)
        print(json.dumps(summary, indent=1, ensure_ascii=False) if args.json else format_summary(summary),
              file=out, flush=True)
    return EXIT_OK


@contextlib.contextmanager
def _stdout_for_results(only_results: bool):
    """With ``--json``, stdout carries the results only: what Ray prints while it runs (worker
    and raylet messages) goes to stderr. Yields the stream to print results to."""
    if not only_results:
        yield sys.stdout
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    out = os.fdopen(os.dup(saved), "w", encoding="utf-8")
    try:
        yield out
    finally:
        out.flush()
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        out.close()


def cmd_watch(settings: Settings, args) -> int:
    import signal
    import threading

    from msearch.files import check_roots

    check_roots(args.paths)
    from pipelines.cluster import connect, stop_local
    from pipelines.watch import run_watch

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with _stdout_for_results(args.json) as out:
        started = connect(settings, verbose=args.verbose)
        print(f"watching {', '.join(args.paths)} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        try:
            return run_watch(settings, args.paths, poll_s=args.poll, quiet_s=args.debounce,
                             reconcile_s=args.reconcile, as_json=args.json, stop=stop, out=out)
        finally:
            if started:
                stop_local(settings)


def cmd_verify(settings: Settings, args) -> int:
    with _Session(settings, embed=False) as session:
        info = _http("GET", f"{session.http}/api/v1/verify").json() if session.http else session.store.verify()
    if args.json:
        print(json.dumps(info, indent=1, ensure_ascii=False))
    elif info["ok"]:
        print(f"ok: {info['files']} indexed files, {info['points']} points, catalog and vectors agree")
    else:
        print(f"{len(info['problems'])} problems ({info['files']} indexed files, {info['points']} points):")
        for p in info["problems"]:
            print(f"  {p['content_hash']}: {p['problem']}" + (f" ({', '.join(p['paths'])})" if p.get("paths") else ""))
    return EXIT_OK if info["ok"] else EXIT_EMPTY


# -- reaching the index ---------------------------------------------------------------------
class _Session:
    """The store and query embedders for one CLI command, wherever they live."""

    def __init__(self, settings: Settings, embed: bool):
        from msearch.owner import running_owner

        self.settings = settings
        self.http = None
        self._cleanup = []
        info = running_owner(settings)
        if info and info.get("http") and _healthy(info["http"]):
            self.http = info["http"]
            return
        if info is not None:
            from pipelines.cluster import connect, disconnect
            from pipelines.owner import OwnerClient, get_owner

            connect(settings)
            self._cleanup.append(disconnect)
            self.store = OwnerClient(get_owner(settings, create=False))
        else:
            from msearch.library import Library
            from msearch.owner import OwnerLock

            lock = OwnerLock(settings).acquire()
            self._cleanup.append(lock.release)
            self.store = Library(settings)
            self._cleanup.append(self.store.close)
        self.embedders = {}
        if embed:
            self.embedders = _local_embedders(settings, self.store.spaces())
            self._cleanup.extend(e.close for e in self.embedders.values())

    def close(self) -> None:
        for fn in reversed(self._cleanup):
            fn()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _local_embedders(settings: Settings, spaces: dict) -> dict:
    from msearch.embed import available_roles, build_embedder

    ok, missing = available_roles(settings, tuple(spaces))
    for message in missing.values():
        log.warning("%s", message)
    return {role: build_embedder(role, settings) for role in ok}


def _http(method: str, url: str, **kwargs):
    import httpx

    response = httpx.request(method, url, timeout=120, **kwargs)
    if response.status_code == 404:
        raise NotFound(response.json().get("detail", "not found"))
    if response.status_code >= 400:
        raise MsearchError(f"HTTP {response.status_code}: {response.json().get('detail', response.text)}")
    return response


# -- search -------------------------------------------------------------------------------
def cmd_search(settings: Settings, args) -> int:
    from msearch.search import SearchService, check_kinds

    if sum(map(bool, (args.text, args.image, args.audio))) != 1:
        print("msearch: give one of TEXT, --image FILE or --audio FILE", file=sys.stderr)
        return EXIT_ERROR
    check_kinds(args.kinds)
    data, example = None, "image" if args.image else "audio"
    if args.image or args.audio:
        query_file = args.image or args.audio
        try:
            data = query_file.expanduser().read_bytes()
        except OSError as e:
            print(f"msearch: cannot read {query_file}: {e.strerror}", file=sys.stderr)
            return EXIT_ERROR
    with _Session(settings, embed=True) as session:
        if session.http:
            if data is not None:
                form = {"kinds": args.kinds or [], "top_k": args.top_k} if args.top_k else {"kinds": args.kinds or []}
                r = _http("POST", f"{session.http}/api/v1/search/{example}", files={"file": ("query", data)}, data=form)
            else:
                r = _http("POST", f"{session.http}/api/v1/search",
                          json={"query": args.text, "kinds": args.kinds, "top_k": args.top_k})
            results = r.json()["results"]
        else:
            service = SearchService(session.embedders, session.store, settings)
            if data is not None:
                search = service.search_image if example == "image" else service.search_audio
                results = search(data, args.kinds, args.top_k)
            else:
                results = service.search_text(args.text, args.kinds, args.top_k)
    if args.json:
        print(json.dumps(results, indent=1, ensure_ascii=False))
    else:
        print(format_results(results))
    return EXIT_OK if results else EXIT_EMPTY


def format_time(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def format_results(results: list[dict]) -> str:
    if not results:
        return "no results"
    lines = []
    for i, r in enumerate(results, 1):
        where = ""
        if r.get("start_s") is not None:
            where = f" [{format_time(r['start_s'])}-{format_time(r['end_s'])}]"
        elif r.get("page") is not None:
            where = f" [page {r['page']}]"
        lines.append(f"{i:>3}. {r['score']:.4f}  {r['kind']:<5}  {r['path']}{where}")
        if r.get("text"):
            snippet = " ".join(r["text"].split())
            lines.append(f"       {snippet[:160]}{'…' if len(snippet) > 160 else ''}")
    return "\n".join(lines)


# -- show / status ----------------------------------------------------------------------------
def cmd_show(settings: Settings, args) -> int:
    from msearch.library import file_id_for

    key = args.key
    path = Path(key).expanduser()
    if path.exists():
        key = str(path.resolve())
    with _Session(settings, embed=False) as session:
        if session.http:
            file_id = key if not path.exists() else file_id_for(key)
            info = _http("GET", f"{session.http}/api/v1/files/{file_id}").json()
        else:
            info = session.store.show(key)
    if args.json:
        print(json.dumps(info, indent=1, ensure_ascii=False))
        return EXIT_OK
    print(f"{info['path']}\n  file_id {info['file_id']}  kind {info['kind']}  format {info['format']}"
          f"  status {info['status']}")
    if info["error"]:
        print(f"  error: {info['error']}")
    media = info.get("media") or {}
    if media:
        facts = ", ".join(f"{k} {v}" for k, v in media.items() if v is not None and not k.endswith("_error"))
        print(f"  media: {facts}")
        for key in ("audio_error", "speech_error"):
            if media.get(key):
                print(f"  {key.replace('_', ' ')}: {media[key]}")
    for u in info["units"]:
        where = f"chars {u['char_start']}-{u['char_end']}" if u["char_start"] is not None else ""
        if u["start_s"] is not None:
            where = f"{format_time(u['start_s'])}-{format_time(u['end_s'])}"
        text = " ".join((u["text"] or "").split())
        print(f"  #{u['unit']:<3} {u['kind']:<5} {u['space']:<5} {where}  {text[:100]}")
    return EXIT_OK


def cmd_status(settings: Settings, args) -> int:
    with _Session(settings, embed=False) as session:
        info = _http("GET", f"{session.http}/api/v1/status").json() if session.http else session.store.status()
    if args.json:
        print(json.dumps(info, indent=1, ensure_ascii=False))
        return EXIT_OK
    print(f"data dir {info['data_dir']}")
    for kind, statuses in sorted(info["kinds"].items()):
        print(f"  {kind:<8} " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())))
    for space, n in sorted(info["points"].items()):
        print(f"  {space} vectors: {n} ({info['models'].get(space)})")
    for item in info["failed"]:
        print(f"  failed  {item['path']}: {item['error']}")
    reasons: dict[str, int] = {}
    for item in info.get("skipped", []):
        reasons[item["error"]] = reasons.get(item["error"], 0) + 1
    for reason, n in reasons.items():
        print(f"  skipped {n} file{'s' if n > 1 else ''}: {reason}")
    return EXIT_OK


# -- serve --------------------------------------------------------------------------------
def cmd_serve(settings: Settings, args) -> int:
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        settings = settings.model_copy(update=overrides)
    from serve.main import run_server

    return run_server(settings, verbose=args.verbose)


if __name__ == "__main__":
    sys.exit(main())
