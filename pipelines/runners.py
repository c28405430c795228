"""Running a list of :class:`~pipelines.stages.Stage` into an :class:`~pipelines.sink.IndexSink`:
on Ray Data (the product), or one stage after another in this process (tests of the core, with
the same stage objects and the same sink)."""

from __future__ import annotations

import warnings
from typing import Iterable, Iterator

import pyarrow as pa

from pipelines import schema
from pipelines.sink import IndexSink
from pipelines.stages import Stage


def run_on_ray(stages: list[Stage], rows: list[dict], sink: IndexSink, cpu_limit: float | None) -> dict:
    """The stages as Ray Data operators (tasks, or actor pools for classes), then the sink's
    parallel write tasks. Returns the sink's totals."""
    import ray

    # Ray Data budgets by the cluster's total; tell it what is actually free (Serve replicas may
    # hold the rest), every run, since the context outlives a run in a long-lived process.
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
        cpu=cpu_limit if cpu_limit is not None else float("inf"))
    # from_items builds its blocks here; from_arrow would run a 1-CPU task first, which never
    # starts while Serve replicas hold the rest of a small cluster.
    ds = ray.data.from_items(rows, override_num_blocks=_blocks(len(rows), stages[0].batch_size))
    for stage in stages:
        options = {"batch_size": stage.batch_size, "batch_format": "pyarrow", "num_cpus": stage.num_cpus,
                   **stage.options}
        if stage.num_gpus:
            options["num_gpus"] = stage.num_gpus
        if stage.actors is not None:
            ds = ds.map_batches(stage.fn, compute=ray.data.ActorPoolStrategy(size=stage.actors),
                                fn_constructor_kwargs=stage.kwargs, **options)
        else:
            if stage.tasks:
                options["compute"] = ray.data.TaskPoolStrategy(size=stage.tasks)
            ds = ds.map_batches(stage.fn, fn_kwargs=stage.kwargs, **options)
    with warnings.catch_warnings():  # a small run has fewer blocks than write tasks allowed: fine
        warnings.filterwarnings("ignore", message="The maximum number of concurrent tasks")
        ds.write_datasink(sink, ray_remote_args={"num_cpus": sink.num_cpus}, concurrency=sink.concurrency)
    return sink.totals


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


def _batches(blocks: list[pa.Table], size: int) -> Iterator[pa.Table]:
    table = pa.concat_tables(blocks) if len(blocks) > 1 else blocks[0] if blocks else None
    if table is None:
        return
    for i in range(0, table.num_rows, size):
        yield table.slice(i, size)


def _outputs(result) -> Iterable[pa.Table]:
    return [result] if isinstance(result, pa.Table) else list(result)


def _blocks(n_files: int, batch: int) -> int:
    return max(1, min(200, -(-n_files // batch)))
