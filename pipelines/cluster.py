"""Joining or starting Ray for msearch, loopback-only unless configured otherwise."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import time

import ray

from msearch.errors import DataDirBusy
from msearch.owner import running_owner
from pipelines.owner import NAMESPACE

log = logging.getLogger(__name__)


def connect(settings, *, job: bool = False, verbose: bool = False) -> bool:
    """Connect this process to Ray; returns True when it started a local cluster itself.

    Order: Ray already initialised; the cluster of a running owner of this data dir; the
    configured ``MSEARCH_RAY_ADDRESS`` (or ``RAY_ADDRESS``, set for ``ray job submit`` drivers);
    else a new local cluster whose every listener binds 127.0.0.1, with the data dir's store
    owner started in it. Commands started at once on one data dir take turns at this choice
    (:func:`_choosing`): the first starts the cluster and its owner, the others join it.
    """
    if ray.is_initialized():
        return False
    quiet = dict(namespace=NAMESPACE, log_to_driver=verbose, logging_level=logging.WARNING,
                 configure_logging=True)
    with _choosing(settings):
        info = running_owner(settings)
        if info is not None and info.get("ray_address") and not _reachable(info["ray_address"]):
            info = _outlive_orphan(settings, info)
        if info is not None:
            if not info.get("ray_address"):
                raise DataDirBusy(
                    f"{settings.data_dir} is already owned by another msearch process (pid {info.get('pid')}) "
                    "that is not reachable through Ray; wait for it to finish, or stop it"
                )
            ray.init(address=info["ray_address"], **quiet)
            return False
        address = settings.ray_address or (os.environ.get("RAY_ADDRESS") if job else None)
        if address:
            ray.init(address=address, **quiet)
            return False
        ray.init(
            address="local",  # never attach to some other cluster started on this machine
            _node_ip_address="127.0.0.1",
            include_dashboard=settings.dashboard,
            dashboard_host=settings.dashboard_host,
            dashboard_port=settings.dashboard_port,
            num_cpus=settings.ray_num_cpus or max(4, os.cpu_count() or 1),
            **quiet,
        )
        from pipelines.owner import get_owner

        try:
            get_owner(settings)  # before the next command looks: it finds this cluster and joins it
        except BaseException:
            shutdown()
            raise
        return True


@contextlib.contextmanager
def _choosing(settings):
    """Hold ``data_dir/connect.lock`` while this process decides between joining the cluster
    of the data dir's owner and starting one (and while a cluster that started ends, see
    :func:`stop_local`): without it, two commands started at once would each start a cluster
    and the second one's owner would find the data dir taken."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(settings.data_dir / "connect.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _reachable(address: str, timeout: float = 2.0) -> bool:
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


ORPHAN_WAIT_S = 30.0


def _outlive_orphan(settings, info: dict) -> dict | None:
    """The data dir's owner is alive but its Ray cluster is gone (its driver was killed): it
    exits by itself once it notices; wait for that, then ask it to (SIGTERM) if it is on this
    machine. Returns the owner info still standing, or None once the data dir is free."""
    import signal
    import socket
    import time

    log.warning("the owner of %s (pid %s) lost its Ray cluster at %s; waiting for it to exit",
                settings.data_dir, info.get("pid"), info["ray_address"])
    deadline = time.monotonic() + ORPHAN_WAIT_S
    asked = False
    while True:
        current = running_owner(settings)
        if current is None:
            return None
        if current.get("ray_address") != info["ray_address"]:
            return current  # a new owner took over meanwhile
        if time.monotonic() > deadline:
            if asked or current.get("host") != socket.gethostname() or not current.get("pid"):
                return current
            log.warning("sending SIGTERM to the orphaned owner (pid %s)", current["pid"])
            try:
                os.kill(int(current["pid"]), signal.SIGTERM)
            except ProcessLookupError:
                pass
            asked, deadline = True, time.monotonic() + 10.0
        time.sleep(0.5)


def shutdown() -> None:
    """``ray.shutdown()``, without its one-second wait for Ray's autoscaler monitor when this
    process started the cluster. Ray stops its processes in turn, the GCS before the monitor;
    on SIGTERM the monitor reports its end to the GCS, which is gone, so it never exits by
    itself and Ray kills it after a second. The monitor of a local cluster that is ending has
    nothing to tell anyone: it is killed first. Best effort (Ray's internals): otherwise Ray
    waits as before."""
    try:
        from ray._private import ray_constants, worker

        node = worker._global_node
        monitors = node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []) if node is not None else []
        for info in monitors:
            info.process.kill()
            info.process.wait(timeout=5)
    except Exception:
        log.debug("could not stop Ray's monitor first", exc_info=True)
    ray.shutdown()


def stop_local(settings, wait_for_others: bool = True) -> None:
    """End a local Ray this process started: the store owner closes its stores first. Other
    commands that joined this cluster (an index run started meanwhile) finish first, unless
    ``wait_for_others`` is false (a server that was asked to stop)."""
    from pipelines.owner import stop_owner

    told = False
    while True:
        with _choosing(settings):  # nobody joins between this look and the end
            others = _other_drivers() if wait_for_others else 0
            if not others:
                try:
                    stop_owner(settings)
                finally:
                    shutdown()
                return
        if not told:
            print(f"msearch: waiting for {others} other msearch command(s) using this Ray cluster to finish",
                  file=sys.stderr, flush=True)
            told = True
        time.sleep(1.0)


def _other_drivers() -> int:
    """How many other live drivers (msearch commands, jobs) this Ray cluster has."""
    try:
        from ray._private.state import state

        me = ray.get_runtime_context().get_job_id()
        return sum(1 for job in state.job_table() if not job["IsDead"] and job["JobID"] != me)
    except Exception:  # the table cannot be read: nothing to wait for
        log.debug("cannot read the job table", exc_info=True)
        return 0


def bind_replica_grpc_to_node_ip() -> None:
    """Make this Serve replica's inter-deployment gRPC server listen on the node's address.

    Ray Serve 2.60 binds it to ``[::]`` (every interface) with no setting to change that;
    on a local install the node address is 127.0.0.1, so this keeps msearch loopback-only.
    Called in each replica's constructor, before Serve starts that server.
    """
    import ray.serve._private.replica as replica

    original = replica.add_port_to_grpc_server
    if getattr(original, "_msearch_bound", False):
        return
    host = ray.util.get_node_ip_address()

    def add_port(server, address: str):
        if address.startswith("[::]:"):
            address = f"{host}:{address.rsplit(':', 1)[1]}"
        return original(server, address)

    add_port._msearch_bound = True
    replica.add_port_to_grpc_server = add_port
