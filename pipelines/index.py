"""The indexing job: list → plan → hash+claim → decode → embed (actor pool) → write (a Datasink).

Run it on the local machine with ``msearch index PATH``, or on a cluster with
``ray job submit --working-dir . -- python -m pipelines.index PATH``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path

import ray

from msearch.embed import ROLE_PURPOSE, ROLES, SPACE_KINDS, SPEECH_ROLES, available_roles
from msearch.errors import DiskFull
from msearch.files import check_roots, walk
from msearch.settings import Settings, load_settings
from pipelines import kept
from pipelines.cluster import connect
from pipelines.owner import OwnerClient, get_owner
from pipelines.runners import run_on_ray
from pipelines.sink import IndexSink
from pipelines.stages import WRITE_CPUS, index_stages

log = logging.getLogger("msearch.index")
PLAN_CHUNK = 20_000


def model_ids(ok: dict[str, str]) -> dict[str, str]:
    """The id recorded for each available role (a hub id or folder; fake models are named by role)."""
    return {role: (f"fake-{role}" if spec == "fake" else spec) for role, spec in ok.items()}


def model_spec_off(settings: Settings, role: str) -> bool:
    return getattr(settings.models, role) == "none"


def run_index(settings: Settings, roots: list[str], progress: bool = True, verbose: bool = False,
              keep_actors: bool = False) -> dict:
    """Index ``roots`` through the connected Ray cluster; returns the run summary.

    ``keep_actors``: embed and transcribe with kept model actors (:mod:`pipelines.kept`), started
    by the first run that needs them and used by the later ones: for drivers that run again and
    again, and for clusters that outlive this driver (``MSEARCH_INDEX__EMBED_KEEP_S`` > 0).
    """
    paths = check_roots(roots)
    _start_ray_data()
    owner = OwnerClient(get_owner(settings))
    ok, missing = available_roles(settings, ROLES)
    for role, message in missing.items():
        if model_spec_off(settings, role):
            log.info("%s model switched off: %s", role, ROLE_PURPOSE[role])
        else:
            log.warning("%s Until then %s.", message, ROLE_PURPOSE[role])
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.enable_operator_progress_bars = progress
    ctx.print_on_execution_start = verbose
    if not verbose:
        # A failed task's traceback is Ray Data's to log at ERROR; the run raises it to us anyway, and
        # an expected stop (a full disk) is said once, in words, by the summary.
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)

    roles = [r for r in ok if r in SPACE_KINDS]
    keep = keep_actors and settings.index.embed_keep_s > 0

    def execute(rows: list[dict], build, embedding: bool, speech: bool) -> dict:
        actors = None
        if keep:
            actors = {"embed": kept.names(settings, roles, settings.index.embed_actors) if embedding else [],
                      "transcribe": kept.transcriber_names(settings, settings.index.whisper_actors) if speech else []}
        cpus, limit = _fit_cpus(settings, embedding=embedding, speech=speech, kept_alive=None if actors is None else {
            "embed": kept.alive(actors["embed"]), "whisper": kept.alive(actors["transcribe"])})
        if actors and actors["embed"]:
            kept.start(kept.EmbedService, actors["embed"], kept.kept_options(settings, cpus, roles=roles), settings,
                       roles)
        # A transcriber is started by the first recording that needs one: a run without recordings
        # leaves no actor holding a CPU share (Serve's replicas may need it) for EMBED_KEEP_S.
        stages = build(cpus, _decode_tasks(settings), actors)
        transcribe = next((s.kwargs.get("transcribe") for s in stages if s.name == "decode"), None)
        try:
            return run_on_ray(stages, rows, IndexSink(settings, num_cpus=cpus["write"]), limit)
        finally:
            if transcribe is not None and not (actors and actors["transcribe"]):
                kept.stop(transcribe.names)  # this run's own transcribers

    summary, _ = index_files(owner, settings, paths, model_ids(ok), missing, execute,
                             job_id=ray.get_runtime_context().get_job_id())
    summary["missing_models"] = {r: m for r, m in missing.items() if not model_spec_off(settings, r)}
    return summary


def _start_ray_data() -> None:
    """Start Ray Data's own actors (its stats, autoscaling coordinator and actor location
    tracker) now, while the store owner starts, instead of when the pipeline does: each is a new
    worker process that imports Ray Data (seconds on a small machine), and the pipeline's first
    task waits for them. They are named and detached, so a Ray that already has them (a running
    ``msearch serve``) keeps its own. Best effort: these are Ray Data's internals."""
    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator)
        from ray.data._internal.execution.node_trackers import get_or_create_actor_location_tracker
        from ray.data._internal.stats import get_or_create_stats_actor

        get_or_create_stats_actor()
        get_or_create_autoscaling_coordinator()
        get_or_create_actor_location_tracker()
    except Exception:  # another Ray Data release: the pipeline starts them itself
        log.debug("could not start Ray Data's actors early", exc_info=True)


def index_files(owner, settings: Settings, paths: list[Path], models: dict[str, str], missing: dict[str, str],
                execute, job_id: str | None = None) -> tuple[dict, dict]:
    """One indexing run: list, plan, the stages (through ``execute``), finish, reconcile.

    ``owner``: the store owner (its actor's client, or a Library in this process);
    ``execute(rows, build, embedding, speech)`` runs the stages that ``build(cpus)`` lists on
    the files to (re)index and returns the sink's totals. Returns the run's summary and the
    owner's report (the files of each outcome).
    """
    started = time.perf_counter()
    run_id = uuid.uuid4().hex
    owner.begin_run(run_id, models, job_id)
    clock = time.perf_counter()
    entries = list(walk(paths, include_hidden=settings.index.include_hidden,
                        follow_symlinks=settings.index.follow_symlinks, exclude=[settings.data_dir]))
    seconds = {"list": time.perf_counter() - clock}
    clock = time.perf_counter()
    todo = []
    for i in range(0, len(entries), PLAN_CHUNK):
        todo.extend(owner.plan(run_id, entries[i : i + PLAN_CHUNK], models))
    seconds["plan"] = time.perf_counter() - clock
    log.info("%d files found, %d new or changed", len(entries), len(todo))
    written = 0
    full = None  # the disk filled up: the run stops, what it settled stays
    if todo:
        roles = [r for r in models if r in SPACE_KINDS]  # the models the embedding actors load
        speech = all(r in models for r in SPEECH_ROLES)
        clock = time.perf_counter()
        try:
            # The runners make the entries blocks of the files' schema (its columns only).
            written = execute(todo, lambda cpus, tasks=None, kept=None: index_stages(
                settings, run_id, models, missing, roles, speech, cpus, tasks, kept), bool(roles), speech)["units"]
        except Exception as e:
            full = cause(e, DiskFull)
            if full is None:
                raise
            log.error("%s", full)
        seconds["pipeline"] = time.perf_counter() - clock
    removed: list[str] = []
    if full is not None:
        report = owner.abort_run(run_id, str(full))
    else:
        report = owner.finish_run(run_id)
        clock = time.perf_counter()
        # Files under the folders given that are no longer on disk leave the index.
        removed = owner.reconcile([str(p) for p in paths if p.is_dir()], entries)
        seconds["reconcile"] = time.perf_counter() - clock
    summary = {
        "seen": len(entries),
        "indexed": len(report.get("indexed", [])),
        "unchanged": len(report.get("unchanged", [])),
        "failed": report.get("failed", []),
        "skipped": report.get("skipped", []),
        "removed": removed,
        "units": written,
        "missing_models": {},
        "seconds": round(time.perf_counter() - started, 2),
        # list, plan, reconcile and the pipeline's wall time from here; hash, claim and write as
        # timed by the owner; decode and embed summed over units (they run in parallel).
        "stage_seconds": {**{k: round(v, 3) for k, v in seconds.items()}, **report.get("stage_seconds", {})},
        "warnings": report.get("warnings", []),
        "error": report.get("error"),
    }
    return summary, report


def cause(e: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``e`` or the first of its causes (through Ray's and Ray Data's wrappers) that is a ``kind``."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, kind):
            return e
        seen.add(id(e))
        e = getattr(e, "cause", None) or e.__cause__ or e.__context__
    return None


def _decode_tasks(settings: Settings) -> int | None:
    """Hash and decode tasks at once (``MSEARCH_INDEX__DECODE_TASKS``; 0: one per core when the
    cluster is this machine alone). A local Ray counts more CPUs than the machine has cores, so
    that Serve's replicas fit beside a run; more decode tasks than cores only add processes,
    each paying its imports, that take turns on the same cores."""
    if settings.index.decode_tasks:
        return settings.index.decode_tasks
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    here = ray.get_runtime_context().get_node_id()
    if len(nodes) == 1 and nodes[0].get("NodeID") == here:
        return max(1, len(os.sched_getaffinity(0)))
    return None


def _fit_cpus(settings: Settings, embedding: bool, speech: bool, kept_alive: dict[str, int] | None = None
              ) -> tuple[dict[str, float], float | None]:
    """CPU requests per stage, scaled down when the cluster cannot hold the actor pools plus a
    task at once (a small machine, or Serve replicas holding some): Ray Data would otherwise
    wait without a word. Ray's CPUs are scheduling shares; the stages still share the cores.
    ``kept_alive``: the embedding and transcription actors are kept ones, this many of which
    already run (``embed``, ``whisper``; they hold their CPUs); None: an embedding actor pool
    and transcribers of this run."""
    idx = settings.index
    # Hashing asks what decoding asks, so that Ray Data fuses the two into one task (no block
    # between them).
    cpus = {"hash": idx.decode_num_cpus, "decode": idx.decode_num_cpus, "write": WRITE_CPUS,
            "embed": idx.embed_num_cpus if embedding else 0.0, "whisper": idx.whisper_num_cpus if speech else 0.0}
    starting = {"embed": idx.embed_actors, "whisper": idx.whisper_actors}  # actors this run starts
    if kept_alive is not None:
        starting = {stage: n - kept_alive.get(stage, 0) for stage, n in starting.items()}
    actors = starting["embed"] * cpus["embed"] + starting["whisper"] * cpus["whisper"]
    least = actors + max(cpus["hash"], cpus["decode"], cpus["write"])  # what must fit at one time
    gpus = (idx.embed_actors * idx.embed_num_gpus if embedding else 0) + \
        (idx.whisper_actors * idx.whisper_num_gpus if speech else 0)
    total, free = ray.cluster_resources(), ray.available_resources()
    if gpus and total.get("GPU", 0) < gpus:
        log.warning("the indexing pipeline needs %.2f GPU but the Ray cluster has %.2f; it waits until the "
                    "cluster grows (see MSEARCH_INDEX__*_NUM_GPUS)", gpus, total.get("GPU", 0))
    have = free.get("CPU", 0.0)
    if have >= least:
        limit = have if have < total.get("CPU", 0.0) else None
    elif have <= 0.05:
        log.warning("the indexing pipeline needs %.2f CPU and the Ray cluster has %.2f free; it waits until "
                    "the cluster grows or other work ends (see MSEARCH_INDEX__* and MSEARCH_RAY_NUM_CPUS)",
                    least, have)
        return cpus, None
    else:
        factor = 0.9 * have / least
        log.info("the indexing pipeline needs %.2f CPU at once and %.2f are free: CPU requests scaled by %.2f",
                 least, have, factor)
        cpus, limit = {stage: value * factor for stage, value in cpus.items()}, have
    # Kept actors and transcribers are not Ray Data's: the ones this run may start (a transcriber:
    # with its first recording) take their CPUs from its share.
    outside = starting["whisper"] * cpus["whisper"] + (starting["embed"] * cpus["embed"] if kept_alive is not None
                                                       else 0.0)
    if outside:
        limit = max(0.05, (have if limit is None else limit) - outside)
    return cpus, limit


def format_summary(summary: dict, limit: int = 20) -> str:
    removed = summary.get("removed") or []
    tail = [f"warning: {w}" for w in summary.get("warnings") or []]
    if summary.get("error"):
        tail.append(f"the run stopped: {summary['error']}")
    lines = [
        f"{summary['seen']} files seen: {summary['indexed']} indexed, {summary['unchanged']} unchanged, "
        f"{len(summary['failed'])} failed, {len(summary['skipped'])} skipped"
        + (f", {len(removed)} removed (gone from disk)" if removed else "")
        + (f"; {summary['units']} units embedded" if summary.get("units") else "") + f" ({summary['seconds']} s)"
    ]
    for item in summary["failed"][:limit]:
        lines.append(f"  failed  {item['path']}: {item['error']}")
    if len(summary["failed"]) > limit:
        lines.append(f"  ... and {len(summary['failed']) - limit} more failed (msearch status lists them all)")
    reasons: dict[str, list[str]] = {}
    for item in summary["skipped"]:
        reasons.setdefault(item["error"], []).append(item["path"])
    for reason, paths in reasons.items():
        if len(paths) == 1:
            lines.append(f"  skipped {paths[0]}: {reason}")
        else:
            lines.append(f"  skipped {len(paths)} files ({paths[0]}, ...): {reason}")
    return "\n".join(lines + tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.index", description=__doc__)
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    started = connect(settings, job=True)
    # A job on a cluster that outlives it leaves its model actors to the next job.
    summary = run_index(settings, args.paths, progress=not args.json, keep_actors=not started)
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
