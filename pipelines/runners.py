"""Running a list of :class:`~pipelines.stages.Stage` into an :class:`~pipelines.sink.IndexSink`:
on Ray Data (the product), or one stage after another in this process (tests of the core, with
the same stage objects and the same sink)."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Iterable, Iterator

import pyarrow as pa

from pipelines import schema
from pipelines.sink import IndexSink
from pipelines.stages import Stage


def run_on_ray(stages: list[Stage], rows: list[dict], sink: IndexSink, cpu_limit: float | None) -> dict:
    """The stages as Ray Data operators (tasks, or actor pools for classes), then the sink's
    parallel write tasks. Returns the sink's totals."""
    ds = dataset(stages, rows, sink.settings, cpu_limit)
    with warnings.catch_warnings():  # a small run has fewer blocks than write tasks allowed: fine
        warnings.filterwarnings("ignore", message="The maximum number of concurrent tasks")
        ds.write_datasink(sink, ray_remote_args={"num_cpus": sink.num_cpus}, concurrency=sink.concurrency)
    return sink.totals


def dataset(stages: list[Stage], rows: list[dict], settings, cpu_limit: float | None = None):
    """The run's files through the stages, as a Ray Data dataset (not yet executed)."""
    import ray

    # Ray Data budgets by the cluster's total; tell it what is actually free (Serve replicas may
    # hold the rest), every run, since the context outlives a run in a long-lived process.
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
        cpu=cpu_limit if cpu_limit is not None else float("inf"))
    # A stage hands a block on once it holds this many bytes. With Ray Data's default (128 MB), a
    # decode task kept all the units it made until it ended, and the model waited for whole tasks.
    ctx.target_max_block_size = int(settings.index.block_mb * 2**20)
    first, blocks = input_blocks(stages[0], rows)
    # The blocks are put here; from_arrow would run a 1-CPU task first, which never starts while
    # Serve replicas hold the rest of a small cluster.
    ds = ray.data.from_blocks(blocks)
    for stage in [first, *stages[1:]]:
        options = {"batch_size": stage.batch_size, "batch_format": "pyarrow", "num_cpus": stage.num_cpus,
                   **stage.options}
        if stage.num_gpus:
            options["num_gpus"] = stage.num_gpus
        if stage.actors is not None:
            # Calls at once run side by side (Ray Data runs an actor's calls one at a time unless told).
            pool = ray.data.ActorPoolStrategy(size=stage.actors, max_concurrent_calls_per_actor=stage.calls,
                                              enable_true_multi_threading=stage.calls > 1)
            ds = ds.map_batches(stage.fn, compute=pool, fn_constructor_kwargs=stage.kwargs, **options)
        else:
            if stage.tasks:
                options["compute"] = ray.data.TaskPoolStrategy(size=stage.tasks)
            ds = ds.map_batches(stage.fn, fn_kwargs=stage.kwargs, **options)
    return ds


def run_in_process(stages: list[Stage], rows: list[dict], sink: IndexSink, owner, built: dict | None = None,
                   reverse: bool = False) -> dict:
    """The same stages, one after another, in batches of their sizes; ``owner`` (a Library)
    stands for the owner actor, ``built`` gives stage classes objects they would otherwise load
    (``{"embed": {"embedders": ...}}``); ``reverse`` writes the blocks last first (blocks may
    reach the writer in any order)."""
    from ray.data.datasource.datasink import WriteResult

    blocks: list[pa.Table] = [schema.table(rows, schema.FILES)]
    for stage in stages:
        kwargs = {**stage.kwargs, **(built or {}).get(stage.name, {})}
        if stage.owner:
            kwargs["owner"] = owner
        call = stage.fn(**kwargs) if stage.actors is not None else (lambda b, kw=kwargs, fn=stage.fn: fn(b, **kw))
        blocks = [out for batch in _batches(blocks, stage.batch_size) for out in _outputs(call(batch))]
    for block in reversed(blocks) if reverse else blocks:
        sink.on_write_complete(WriteResult(block.num_rows, 0, [sink.write([block], None)]))
    return sink.totals


def _batches(blocks: list[pa.Table], size: int | None) -> Iterator[pa.Table]:
    if size is None:  # each block whole, as Ray Data calls a stage without a batch size
        yield from blocks
        return
    table = pa.concat_tables(blocks) if len(blocks) > 1 else blocks[0] if blocks else None
    if table is None:
        return
    for i in range(0, table.num_rows, size):
        yield table.slice(i, size)


def _outputs(result) -> Iterable[pa.Table]:
    return [result] if isinstance(result, pa.Table) else list(result)


def input_blocks(stage: Stage, rows: list[dict]) -> tuple[Stage, list[pa.Table]]:
    """The run's files in blocks of the first stage's batch, and that stage with the batch size
    it gets. Ray Data gives a task whole blocks until they hold a batch, so a block is a task.
    A run with fewer files than the stage's tasks at once can take in batches gets smaller
    ones, so that every task has files (500 files in batches of 256 made one task decode them
    all on one core while the others waited)."""
    size = stage.batch_size
    if stage.tasks:
        size = max(1, min(size, -(-len(rows) // stage.tasks)))
    blocks = [schema.table(rows[i : i + size], schema.FILES) for i in range(0, len(rows), size)]
    return dataclasses.replace(stage, batch_size=size), blocks
