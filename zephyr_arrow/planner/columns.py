"""Which columns a stage's ops need: what lets a stage read, parse and move only those.

Each op says what its input needs for what is used after it (``Op.needs``); these walk a
stage's ops backwards from what its end needs (``needed_by`` its boundary).
"""

from __future__ import annotations

from dataclasses import replace

from zephyr_arrow import ops
from zephyr_arrow.planner.stages import Stage


def needed_by(boundary: ops.Op | None) -> tuple[str, ...] | None:
    """What a stage's end needs of its rows: a shuffle's scatter, the columns its key reads and
    the shuffle moves (where the op knows them); anything else, every column (None)."""
    return None if boundary is None else boundary.input_columns()


def used_columns(stage_ops: tuple[ops.Op, ...], end: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The input columns ``stage_ops`` use for the columns ``end`` (None: every column) to be
    right after them, or None for every column (or none known to be unused).

    Walks the ops backwards from ``end`` (``needed_by`` a stage's boundary). A select narrows
    the set, a filter or with_columns adds the columns its expressions read, ``count()`` reads
    none. A row function reads the fields its code shows (``fields_read``): a map's or
    flat_map's input needs only those, a filter adds them. A broadcast join adds its left keys.
    Any other row function, a load, map_batches or an expression that picks columns by pattern,
    type or position makes it every column again. An empty set is None too: a batch of no
    columns would lose its row count.
    """
    return used_by(stage_ops, end) or None


def used_by(stage_ops: tuple[ops.Op, ...], used: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The columns the input of ``stage_ops`` must have for ``used`` to be right after them (None: every column)."""
    for op in reversed(stage_ops):
        used = op.needs(used)
    return used


def reading_only(stage: Stage, end: tuple[str, ...] | None) -> Stage:
    """``stage`` with its load, or its chunk reads, narrowed to what its ops use for ``end`` to be right after them."""
    stage_ops = push_used_columns_into_load(stage.ops, end)
    reads_chunks = stage.source is None or isinstance(stage.source, ops.RefsSource)
    return replace(stage, ops=stage_ops, input_columns=used_columns(stage_ops, end) if reads_chunks else None)


def push_used_columns_into_load(stage_ops: tuple[ops.Op, ...], end: tuple[str, ...] | None) -> tuple[ops.Op, ...]:
    """Tell the stage's load which columns the ops after it use for ``end`` (the columns needed
    after the stage, None: every column) to be right (``used_columns``), so its reader skips the rest."""
    loads = [index for index, op in enumerate(stage_ops) if isinstance(op, ops.LoadOp)]
    if not loads or stage_ops[loads[-1]].columns is not None or stage_ops[loads[-1]].batch_mode:
        return stage_ops  # a batch-mode load's rows are batches, whose columns no row function names
    index = loads[-1]
    used = used_columns(stage_ops[index + 1 :], end)
    if used is None:
        return stage_ops
    load = stage_ops[index]
    keep = tuple(name for name in used if not (load.include_file_paths and name == load.file_path_column))
    return (*stage_ops[:index], replace(load, keep=keep), *stage_ops[index + 1 :])
