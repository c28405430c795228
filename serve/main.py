"""``msearch serve``: Ray (joined or started), the store owner, and the Serve app, until a signal."""

import logging
import os
import signal
import sys
import threading

from pipelines.cluster import connect, stop_local  # first: sets Ray's environment before ray is imported
from pipelines.owner import get_owner

import ray
from ray import serve

from msearch.auth import ensure_token
from msearch.owner import forget_runtime, write_runtime
from serve.app import build_app

log = logging.getLogger(__name__)


def run_server(settings, verbose: bool = False) -> int:
    started = connect(settings, verbose=verbose)
    # Our handlers replace the ones ray.init installs, and are in place before anything serves:
    # a signal during start-up still ends in the orderly shutdown below.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        get_owner(settings)
        serve.start(http_options={"host": settings.host, "port": settings.port})
        url = f"http://{settings.host}:{settings.port}"
        write_runtime(settings, http=url)  # CLI commands check /health before they use it
        serve.run(build_app(settings), name="msearch", route_prefix="/", blocking=False)
        token = ensure_token(settings)
        print(f"msearch is serving {settings.data_dir} at {url} (search page: {url}/, API docs: {url}/docs)")
        print(f"control API token ({len(token)} characters): {settings.token_path}")
        if settings.roots:
            # Index the configured folders and follow them for as long as we serve.
            threading.Thread(target=_watch, args=(settings, stop), daemon=True, name="msearch-watch").start()
            print(f"watching {', '.join(settings.roots)}")
        if started and settings.dashboard:
            print(f"Ray dashboard: http://{settings.dashboard_host}:{settings.dashboard_port} "
                  "(Jobs: indexing runs; Serve: deployments and replicas)")
        print("Press Ctrl-C to stop.", flush=True)
        stop.wait()
    finally:
        _exit_if_stuck(after_s=120)
        forget_runtime(settings, "http")
        if started:
            stop_local(settings, wait_for_others=False)  # the owner closes its stores, then the local Ray goes
        else:
            try:
                serve.delete("msearch")
            except Exception as e:  # the app may not have started; detaching anyway
                log.debug("serve.delete: %s", e)
            ray.shutdown()
    return 0


def _watch(settings, stop: threading.Event) -> None:
    from pipelines.watch import run_watch

    try:
        run_watch(settings, list(settings.roots), poll_s=settings.watch_poll_s, stop=stop)
    except Exception:  # serving goes on; the log says why the folders are not followed
        log.exception("watching %s stopped", ", ".join(settings.roots))


def _exit_if_stuck(after_s: float) -> None:
    """Shutdown must not hang when the cluster is already going down with us."""

    def bail() -> None:
        print(f"msearch: shutdown took over {after_s:.0f} s; exiting", file=sys.stderr, flush=True)
        os._exit(2)

    timer = threading.Timer(after_s, bail)
    timer.daemon = True
    timer.start()
