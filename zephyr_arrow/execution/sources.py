"""Resolve a plan's source into the first stage's per-shard inputs (the only I/O before a run),
and cut a big input file into pieces that several tasks read."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from zephyr_arrow import ops
from zephyr_arrow.execution.tasks import ChunksInput, ItemsInput, ShardInput
from zephyr_arrow.fs import glob_files, size

logger = logging.getLogger("zephyr_arrow")

# A piece is at most this much of a file (on disk), so that a stage of few big files still
# has a few tasks a worker: one slow worker (a busy machine) then holds up less of the stage.
MAX_PIECE_BYTES = 256 << 20
# And at least this much: every task costs a start, a footer read and its own chunk files.
MIN_PIECE_BYTES = 32 << 20


def source_inputs(source: ops.Source) -> list[ShardInput]:
    """One input per shard of the first stage."""
    if isinstance(source, ops.ItemsSource):
        return [ItemsInput(tuple(items)) for items in ops.shard_items(source.items, source.num_shards)]
    if isinstance(source, ops.FilesSource):
        paths = glob_files(source.pattern, source.empty_glob_ok)
        if source.approx_shard_bytes is not None:
            from zephyr_arrow.io.spec import split_specs

            return [ItemsInput((spec,)) for spec in split_specs(paths, source.approx_shard_bytes)]
        return [ItemsInput((path,)) for path in paths]
    if isinstance(source, ops.RefsSource):
        return [ChunksInput(tuple(shard)) for shard in source.refs.shards]
    raise TypeError(f"unknown source {source!r}")


@dataclass(frozen=True, slots=True)
class Pieces:
    """The tasks of a stage whose big files are cut: one input per piece, and the shard each belongs to."""

    inputs: list[ShardInput]
    shards: list[int]  # ascending: a shard's pieces are consecutive tasks, in file order


def split_inputs(inputs: list[ShardInput], load: ops.LoadOp, num_workers: int) -> Pieces | None:
    """Cut each file (one per shard of ``inputs``) that is more than a fair share of all of
    them (their bytes over ``num_workers``) into pieces; None when none is cut."""
    if num_workers < 2:
        return None
    from zephyr_arrow.io.pieces import split_file, splittable

    paths = [shard_input.items[0] for shard_input in inputs]
    sizes = [size(path) for path in paths]
    fair_share = sum(sizes) / num_workers
    file_format = None if load.format == "auto" else load.format
    pieces, shards = [], []
    for shard_index, (path, file_bytes) in enumerate(zip(paths, sizes)):
        cut = [ItemsInput((path,))]
        if file_bytes > fair_share:
            if splittable(path, file_format):
                cut = [ItemsInput((piece,)) for piece in split_file(path, file_format, file_bytes, _piece_bytes(file_bytes, fair_share, num_workers))]
            else:
                logger.warning(
                    "%s (%.0f MB) is more than a fair share of this stage's input (%.0f MB for %d workers), but a "
                    "compressed text file cannot be cut into pieces: one task reads it all. Uncompressed, or in "
                    "smaller files, it would be shared among workers.",
                    path, file_bytes / 2**20, fair_share / 2**20, num_workers,
                )
        pieces.extend(cut)
        shards.extend([shard_index] * len(cut))
    return Pieces(pieces, shards) if len(pieces) > len(inputs) else None


def _piece_bytes(file_bytes: int, fair_share: float, num_workers: int) -> int:
    """How big a file's pieces are: a fair share, within the bounds, and a number of pieces the
    workers share evenly where the lower bound allows it (a 2 GB file on 2 workers: 8 pieces,
    not 7 of which one worker reads 4)."""
    count = math.ceil(file_bytes / min(max(fair_share, MIN_PIECE_BYTES), MAX_PIECE_BYTES))
    even = math.ceil(count / num_workers) * num_workers
    if file_bytes / even >= MIN_PIECE_BYTES:
        count = even
    return math.ceil(file_bytes / count)
