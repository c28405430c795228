"""The store owner as a named Ray actor: the one process that opens a data dir's stores.

The indexing job, the Serve replicas and CLI commands all reach the stores through it.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from msearch.errors import DataDirBusy, NotRunning
from msearch.library import Library
from msearch.owner import OwnerLock

NAMESPACE = "msearch"
log = logging.getLogger(__name__)


class StoreOwner:
    """Holds the data dir lock and a :class:`Library`; forwards calls to it."""

    def __init__(self, settings):
        logging.basicConfig(level=settings.log_level)
        ctx = ray.get_runtime_context()
        self.lock = OwnerLock(settings).acquire(
            ray_address=ctx.gcs_address, namespace=NAMESPACE, actor=settings.owner_name
        )
        try:
            self.library = Library(settings)
        except BaseException:
            self.lock.release()
            raise
        self.library.job_alive = job_alive
        # pyarrow imports pandas the first time it converts Python rows (~0.5 s, to look for
        # pandas types): paid while the owner starts, not inside the first claim of a run.
        pa.array([0])

    def call(self, method: str, *args, **kwargs):
        if method.startswith("_"):
            raise AttributeError(method)
        return getattr(self.library, method)(*args, **kwargs)

    def close(self) -> None:
        self.library.close()
        self.lock.release()


def job_alive(job_id: str) -> bool:
    """Whether the Ray job (an indexing driver) still runs, from the GCS job table."""
    try:
        from ray._private.state import state

        for job in state.job_table():
            if job["JobID"] == job_id:
                return not job["IsDead"]
        return False
    except Exception:  # the table cannot be read: assume alive, never drop live work
        log.debug("cannot read the job table", exc_info=True)
        return True


def get_owner(settings, create: bool = True):
    """The owner actor of ``settings.data_dir`` in the connected Ray cluster (created if asked)."""
    if not create:
        try:
            return ray.get_actor(settings.owner_name, namespace=NAMESPACE)
        except ValueError as e:
            raise NotRunning(f"no msearch store owner for {settings.data_dir} in this Ray cluster") from e
    # The owner opens the data dir, which is on this node's disk: it runs here, whatever other
    # nodes the cluster has.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(StoreOwner).options(
        name=settings.owner_name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        max_concurrency=16, num_cpus=0, max_restarts=-1, scheduling_strategy=here,
    ).remote(settings)
    try:
        ray.get(actor.call.remote("ping"))  # surfaces a failed start (e.g. the data dir is busy)
    except ray.exceptions.RayActorError as e:
        cause = e.__cause__ or e
        raise DataDirBusy(f"the store owner for {settings.data_dir} could not start: {cause}") from e
    return actor


def stop_owner(settings) -> bool:
    from pipelines.process import stop_queue

    stop_queue(settings)  # its runs go through the owner
    try:
        actor = ray.get_actor(settings.owner_name, namespace=NAMESPACE)
    except ValueError:
        return False
    try:
        ray.get(actor.close.remote(), timeout=60)
    finally:
        ray.kill(actor, no_restart=True)
    return True


class OwnerClient:
    """The Library's interface, called through the owner actor (blocking)."""

    def __init__(self, actor):
        self.actor = actor

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)

        def remote_call(*args, **kwargs):
            return ray.get(self.actor.call.remote(method, *args, **kwargs))

        return remote_call
