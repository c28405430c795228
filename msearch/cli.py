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

from typing import TYPE_CHECKING

from msearch.errors import MsearchError, NotFound

if TYPE_CHECKING:
    from msearch.settings import Settings

log = logging.getLogger("msearch")

EXIT_OK, EXIT_EMPTY, EXIT_ERROR = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_ERROR
    if args.command == "search":
        served = _search_served(args)  # a running server answers before anything else loads
        if served is not None:
            return served
    from msearch.settings import load_settings, ray_environment

    ray_environment()
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

    s = sub.add_parser("search", help="search by text, by an example image or sound, or like an indexed file")
    s.add_argument("text", nargs="?", metavar="TEXT")
    s.add_argument("--image", type=Path, metavar="FILE", help="search by this image instead of text")
    s.add_argument("--audio", type=Path, metavar="FILE",
                   help="search by this sound instead of text (its first MSEARCH_AUDIO__WINDOW_S seconds)")
    s.add_argument("--like", metavar="PATH|FILE_ID[@SECONDS|#PAGE]",
                   help="results like an indexed file, or one moment (@SECONDS) or page (#PAGE) of it")
    s.add_argument("--kind", action="append", dest="kinds", metavar="K",
                   help="only results of this kind (text, image, video, audio, page); repeatable")
    s.add_argument("--top-k", type=int, default=None, metavar="N")
    s.add_argument("--offset", type=int, default=None, metavar="N", help="skip the first N results (paging)")
    s.add_argument("--sort", choices=("relevance", "date"), default=None,
                   help="relevance (default), or date: newest first among the matches")
    s.add_argument("--min-relative-score", type=float, default=None, metavar="X",
                   help="drop results scoring under X (0-1) times the best result's score")
    s.add_argument("--path", action="append", dest="folders", metavar="DIR",
                   help="only files inside this folder; repeatable")
    s.add_argument("--after", metavar="DATE", help="only files modified at or after DATE (ISO 8601)")
    s.add_argument("--before", metavar="DATE", help="only files modified before DATE (ISO 8601)")
    s.add_argument("--min-size", type=int, metavar="BYTES")
    s.add_argument("--max-size", type=int, metavar="BYTES")
    s.add_argument("--min-duration", type=float, metavar="SECONDS")
    s.add_argument("--max-duration", type=float, metavar="SECONDS")
    s.add_argument("--json", action="store_true", help="print the results as a JSON list")
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
    s.add_argument("--repair", action="store_true",
                   help="set aside what cannot be read, and embed again the files whose contents lack units or points")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("status", help="files per kind and status, points per space, failures")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("token", help="print the control API's token (made if there is none)")
    s.add_argument("--rotate", action="store_true", help="replace it: the old token stops working at once")
    s.set_defaults(func=cmd_token)

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
            # A cluster that outlives this command (a running msearch) keeps its model actors for the next run.
            summary = run_index(settings, args.paths, progress=not args.json, verbose=args.verbose,
                                keep_actors=not started)
        finally:
            if started:
                stop_local(settings)
        print(json.dumps(summary, indent=1, ensure_ascii=False) if args.json else format_summary(summary),
              file=out, flush=True)
    if summary.get("error"):
        print(f"msearch: {summary['error']}", file=sys.stderr)
        return EXIT_ERROR
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
    from msearch.client import open_index

    if args.repair:
        return cmd_repair(settings, args)
    index = open_index(settings)
    try:
        info = index.verify()
    finally:
        index.close()
    if args.json:
        print(json.dumps(info, indent=1, ensure_ascii=False))
    elif info["ok"]:
        print(f"ok: {info['files']} indexed files, {info['points']} points, catalog and vectors agree")
    else:
        print(f"{len(info['problems'])} problems ({info['files']} indexed files, {info['points']} points):")
        for p in info["problems"]:
            print(f"  {p['content_hash']}: {p['problem']}" + (f" ({', '.join(p['paths'])})" if p.get("paths") else ""))
    return EXIT_OK if info["ok"] else EXIT_EMPTY


def cmd_repair(settings: Settings, args) -> int:
    """``msearch verify --repair``: the store owner sets aside and drops what is wrong, then the
    files concerned are indexed again (on the running msearch's Ray, or a local one)."""
    from pipelines.cluster import connect, stop_local
    from pipelines.index import format_summary, run_index
    from pipelines.owner import OwnerClient, get_owner

    with _stdout_for_results(args.json) as out:
        started = connect(settings, verbose=args.verbose)
        try:
            owner = OwnerClient(get_owner(settings))
            done = owner.repair()
            for folder in done["set_aside"]:
                print(f"set aside (damaged): {folder}", file=sys.stderr)
            summary = None
            paths = [p for p in done["reindex"] if Path(p).exists()]
            if paths:
                print(f"indexing {len(paths)} file(s) again", file=sys.stderr)
                summary = run_index(settings, paths, progress=not args.json, verbose=args.verbose,
                                    keep_actors=not started)
            info = owner.verify()
        finally:
            if started:
                stop_local(settings)
        if args.json:
            print(json.dumps({**done, "index": summary, "verify": info}, indent=1, ensure_ascii=False), file=out)
        else:
            if summary:
                print(format_summary(summary), file=out)
            print("ok: catalog and vectors agree" if info["ok"] else f"{len(info['problems'])} problems remain",
                  file=out)
    return EXIT_OK if info["ok"] else EXIT_EMPTY


# -- search -------------------------------------------------------------------------------
def search_request(args) -> dict:
    """What ``msearch search`` asks, as plain values: ``query``, ``example`` (``image`` or
    ``audio``) and ``data``, or ``like`` (key, seconds, page); and the search ``options``
    (``filters`` among them). Checked by the server, or by :func:`msearch.query.options`."""
    from msearch.errors import BadInput

    if sum(map(bool, (args.text, args.image, args.audio, args.like))) != 1:
        raise BadInput("give one of TEXT, --image FILE, --audio FILE or --like FILE")
    filters = {k: v for k, v in (
        ("path_prefix", [str(Path(f).expanduser().resolve()) for f in args.folders] if args.folders else None),
        ("modified_after", args.after), ("modified_before", args.before),
        ("min_size", args.min_size), ("max_size", args.max_size),
        ("min_duration_s", args.min_duration), ("max_duration_s", args.max_duration)) if v is not None}
    options = {k: v for k, v in (("kinds", args.kinds), ("top_k", args.top_k), ("offset", args.offset),
                                 ("sort", args.sort), ("min_relative_score", args.min_relative_score),
                                 ("filters", filters or None)) if v is not None}
    request = {"query": args.text, "options": options}
    if args.image or args.audio:
        query_file = args.image or args.audio
        try:
            request["data"] = query_file.expanduser().read_bytes()
        except OSError as e:
            raise BadInput(f"cannot read {query_file}: {e.strerror}") from e
        request["example"] = "image" if args.image else "audio"
    if args.like:
        request["like"] = parse_like(args.like)
    return request


def cmd_search(settings: Settings, args) -> int:
    from msearch.client import open_index
    from msearch.query import options as search_options

    request = search_request(args)
    options = search_options(**request["options"])
    index = open_index(settings)
    try:
        if "like" in request:
            key, start_s, page = request["like"]
            found = index.similar(index.file_id(key) if key.startswith("/") else key, start_s, page, options)
        else:
            example = request.get("example")
            found = index.search(request["query"], options, image=request.get("data") if example == "image" else None,
                                 audio=request.get("data") if example == "audio" else None)
    finally:
        index.close()
    return print_results(args, found)


def _search_served(args) -> int | None:
    """``msearch search`` answered by the data dir's running server, with nothing loaded but
    Python's HTTP client (the server checks the request); None when no server answers."""
    from msearch.http_client import HttpClient
    from msearch.ids import file_id_for
    from msearch.owner import data_dir_from_environment, running_owner_at

    info = running_owner_at(data_dir_from_environment())
    if not info or not info.get("http"):
        return None
    client = HttpClient(info["http"])
    try:
        if not client.healthy():
            return None
        try:
            request = search_request(args)
            options = request["options"]
            if "like" in request:
                key, start_s, page = request["like"]
                body = {"file_id": file_id_for(key) if key.startswith("/") else key, "start_s": start_s,
                        "page": page, **options}
                found = client.call("POST", "/api/v1/search/similar", body)
            elif "example" in request:
                found = client.upload(request["example"], request["data"], options)
            else:
                found = client.call("POST", "/api/v1/search", {"query": request["query"], **options})
        except MsearchError as e:
            print(f"msearch: {e}", file=sys.stderr)
            return EXIT_EMPTY if isinstance(e, NotFound) else EXIT_ERROR
        return print_results(args, found)
    finally:
        client.close()


def print_results(args, found: dict) -> int:
    results = found["results"]
    if args.json:
        print(json.dumps(results, indent=1, ensure_ascii=False))
    else:
        print(format_results(results, offset=found.get("offset") or args.offset or 0, total=found["total"],
                             exact=found["total_exact"]))
    return EXIT_OK if results else EXIT_EMPTY


def parse_like(value: str) -> tuple[str, float | None, int | None]:
    """``PATH|FILE_ID[@SECONDS|#PAGE]`` as (a path made absolute, or the file id; seconds; page)."""
    from msearch.errors import BadInput

    key, start_s, page = value, None, None
    if "@" in value:
        key, _, when = value.rpartition("@")
        try:
            start_s = float(when)
        except ValueError:
            raise BadInput(f"--like {value}: {when!r} is not a number of seconds") from None
    elif "#" in value:
        key, _, number = value.rpartition("#")
        if not number.isdigit() or int(number) < 1:
            raise BadInput(f"--like {value}: {number!r} is not a page number")
        page = int(number)
    path = Path(key).expanduser()
    if path.exists() or "/" in key:
        key = str(path.resolve())
    return key, start_s, page


def format_time(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _where(m: dict) -> str:
    if m.get("start_s") is not None:
        return f"{format_time(m['start_s'])}-{format_time(m['end_s'])}"
    if m.get("page") is not None:
        return f"page {m['page']}"
    return ""


def format_results(results: list[dict], offset: int = 0, total: int | None = None, exact: bool = True) -> str:
    if not results:
        return "no results"
    lines = []
    for i, r in enumerate(results, offset + 1):
        where = _where(r)
        lines.append(f"{i:>3}. {r['score']:.4f}  {r['kind']:<5}  {r['path']}{f' [{where}]' if where else ''}")
        if r.get("text"):
            snippet = " ".join(r["text"].split())
            lines.append(f"       {snippet[:160]}{'…' if len(snippet) > 160 else ''}")
        others = [m for m in r.get("moments", [])[1:] if _where(m)]
        if others:
            shown = ", ".join(_where(m) for m in others[:6])
            lines.append(f"       also {shown}{f' (+{len(others) - 6} more)' if len(others) > 6 else ''}")
    if total is not None:
        lines.append(f"results {offset + 1}-{offset + len(results)} of {total}{'' if exact else '+'}")
    return "\n".join(lines)


# -- show / status ----------------------------------------------------------------------------
def cmd_show(settings: Settings, args) -> int:
    from msearch.client import open_index

    key = args.key
    path = Path(key).expanduser()
    if path.exists():
        key = str(path.resolve())
    index = open_index(settings)
    try:
        info = index.show(key)
    finally:
        index.close()
    if args.json:
        print(json.dumps(info, indent=1, ensure_ascii=False))
        return EXIT_OK
    print(f"{info['path']}\n  file_id {info['file_id']}  kind {info['kind']}  format {info['format']}"
          f"  status {info['status']}")
    if info["error"]:
        print(f"  error: {info['error']}")
    if info.get("warning"):
        print(f"  warning: {info['warning']}")
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
    from msearch.client import open_index

    index = open_index(settings)
    try:
        info = index.status()
    finally:
        index.close()
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
    for item in info.get("warnings", []):
        print(f"  partly  {item['path']}: {item['warning']}")
    reasons: dict[str, int] = {}
    for item in info.get("skipped", []):
        reasons[item["error"]] = reasons.get(item["error"], 0) + 1
    for reason, n in reasons.items():
        print(f"  skipped {n} file{'s' if n > 1 else ''}: {reason}")
    return EXIT_OK


def cmd_token(settings: Settings, args) -> int:
    from msearch.auth import ensure_token, rotate_token

    token = rotate_token(settings) if args.rotate else ensure_token(settings)
    print(token)
    print(f"({settings.token_path}{'; the old token no longer works' if args.rotate else ''})", file=sys.stderr)
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
