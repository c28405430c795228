"""The indexing job: list → plan → hash+claim → decode → embed (actor pool) → write.

Run it on the local machine with ``msearch index PATH``, or on a cluster with
``ray job submit --working-dir . -- python -m pipelines.index PATH``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid

import ray

from msearch.embed import SPACE_KINDS, available_roles
from msearch.files import check_roots, walk
from msearch.settings import Settings, load_settings
from pipelines import schema, stages
from pipelines.cluster import connect
from pipelines.owner import OwnerClient, get_owner

log = logging.getLogger("msearch.index")
PLAN_CHUNK = 20_000
HASH_CPUS = 0.25
WRITE_CPUS = 0.1


def model_ids(ok: dict[str, str]) -> dict[str, str]:
    """The id recorded for each available role (a hub id or folder; fake models are named by role)."""
    return {role: (f"fake-{role}" if spec == "fake" else spec) for role, spec in ok.items()}


def run_index(settings: Settings, roots: list[str], progress: bool = True, verbose: bool = False) -> dict:
    """Index ``roots`` through the connected Ray cluster; returns the run summary."""
    started = time.perf_counter()
    paths = check_roots(roots)
    owner = OwnerClient(get_owner(settings))
    ok, missing = available_roles(settings, tuple(SPACE_KINDS))
    for message in missing.values():
        log.warning("%s The files it would index are recorded as skipped.", message)
    models = model_ids(ok)
    run_id = uuid.uuid4().hex
    owner.begin_run(run_id, models)

    entries = list(walk(paths, include_hidden=settings.index.include_hidden,
                        follow_symlinks=settings.index.follow_symlinks, exclude=[settings.data_dir]))
    todo = []
    for i in range(0, len(entries), PLAN_CHUNK):
        todo.extend(owner.plan(run_id, entries[i : i + PLAN_CHUNK], models))
    log.info("%d files found, %d new or changed", len(entries), len(todo))
    written = 0
    if todo:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        ctx.enable_operator_progress_bars = progress
        ctx.print_on_execution_start = verbose
        if not verbose:
            logging.getLogger("ray.data").setLevel(logging.ERROR)
        written = _run_pipeline(settings, todo, run_id, models, missing, list(ok))
    report = owner.finish_run(run_id)
    summary = {
        "seen": len(entries),
        "indexed": len(report.get("indexed", [])),
        "unchanged": len(report.get("unchanged", [])),
        "failed": report.get("failed", []),
        "skipped": report.get("skipped", []),
        "units": written,
        "missing_models": missing,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return summary


def _run_pipeline(settings: Settings, todo: list[dict], run_id: str, models: dict, missing: dict,
                  roles: list[str]) -> int:
    idx = settings.index
    _check_resources(settings, embedding=bool(roles))
    ds = ray.data.from_arrow(schema.table(todo, schema.FILES))
    ds = ds.map_batches(
        stages.hash_and_claim, batch_size=idx.hash_batch_size, batch_format="pyarrow", num_cpus=HASH_CPUS,
        fn_kwargs={"settings": settings, "run_id": run_id, "models": models, "missing": missing},
    )
    ds = ds.map_batches(stages.decode, batch_size=idx.decode_batch_size, batch_format="pyarrow",
                        num_cpus=idx.decode_num_cpus, fn_kwargs={"settings": settings})
    if roles:
        ds = ds.map_batches(
            stages.EmbedUnits, batch_size=idx.embed_batch_size, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=idx.embed_actors),
            num_cpus=idx.embed_num_cpus, num_gpus=idx.embed_num_gpus,
            fn_constructor_kwargs={"settings": settings, "roles": roles},
        )
    ds = ds.map_batches(stages.write, batch_size=idx.write_batch_size, batch_format="pyarrow",
                        num_cpus=WRITE_CPUS, fn_kwargs={"settings": settings})
    units = 0
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        units += sum(batch.column("units").to_pylist())
    return units


def _check_resources(settings: Settings, embedding: bool) -> None:
    """Warn before a run that cannot start at once: Ray Data would wait silently for resources."""
    idx = settings.index
    need = {"CPU": HASH_CPUS + idx.decode_num_cpus + WRITE_CPUS}
    if embedding:
        need["CPU"] += idx.embed_actors * idx.embed_num_cpus
        if idx.embed_num_gpus:
            need["GPU"] = idx.embed_actors * idx.embed_num_gpus
    total, free = ray.cluster_resources(), ray.available_resources()
    for name, amount in need.items():
        if total.get(name, 0) < amount:
            log.warning("the indexing pipeline needs %.2f %s but the Ray cluster has %.2f; it waits until "
                        "the cluster grows (see MSEARCH_INDEX__* and MSEARCH_RAY_NUM_CPUS)",
                        amount, name, total.get(name, 0))
        elif free.get(name, 0) < amount:
            log.warning("the indexing pipeline needs %.2f %s and %.2f are free now; it may wait for "
                        "other work (e.g. Serve replicas) to release them", amount, name, free.get(name, 0))


def format_summary(summary: dict, limit: int = 20) -> str:
    lines = [
        f"{summary['seen']} files seen: {summary['indexed']} indexed, {summary['unchanged']} unchanged, "
        f"{len(summary['failed'])} failed, {len(summary['skipped'])} skipped ({summary['seconds']} s)"
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
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.index", description=__doc__)
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    connect(settings, job=True)
    summary = run_index(settings, args.paths, progress=not args.json)
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
