"""Resolve a plan's source into the first stage's per-shard inputs (the only I/O before a run)."""

from __future__ import annotations

from zephyr_arrow import ops
from zephyr_arrow.execution.tasks import ChunksInput, ItemsInput, ShardInput
from zephyr_arrow.fs import glob_files


def source_inputs(source: ops.Source) -> list[ShardInput]:
    """One input per shard of the first stage."""
    if isinstance(source, ops.ItemsSource):
        return [ItemsInput(tuple(items)) for items in ops.shard_items(source.items, source.num_shards)]
    if isinstance(source, ops.FilesSource):
        return [ItemsInput((path,)) for path in glob_files(source.pattern, source.empty_glob_ok)]
    if isinstance(source, ops.RefsSource):
        return [ChunksInput(tuple(shard)) for shard in source.refs.shards]
    raise TypeError(f"unknown source {source!r}")
