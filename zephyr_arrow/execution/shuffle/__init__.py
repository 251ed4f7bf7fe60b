"""Shuffles and joins: each op's map, coordinator and reduce sides in one module of its own.

    group_by.py  deduplicate.py  aggregate.py  join.py  sort.py  sorted_merge_join.py
        each an ``Exchange`` (``exchange.py``): scatter -> reduce_inputs -> reduce
    exchange.py   the interface, and the hash shuffle four of them share
    keys.py       shuffle keys: the stable hash, encoded keys (key_encoding.py), the shuffle columns
    runs.py       a scatter task's run files; merge.py: sorted runs and their k-way merge
    partial_aggregate.py  an aggregate's map-side fold

Adding a shuffle is an op (``ops/shuffles.py``, with ``scatters = True``), a module here
and a line in ``_MODULES``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from zephyr_arrow import ops

if TYPE_CHECKING:
    from zephyr_arrow.execution.shuffle.exchange import Exchange

# Imported on first use: the driver of a plan without shuffles, and one that only plans,
# need not import Polars' and Arrow's compute paths.
_MODULES: dict[type[ops.Op], str] = {
    ops.GroupByOp: "group_by",
    ops.DeduplicateOp: "deduplicate",
    ops.AggregateOp: "aggregate",
    ops.JoinOp: "join",
    ops.SortOp: "sort",
    ops.SortedMergeJoinOp: "sorted_merge_join",
}


def exchange_for(op: ops.Op) -> Exchange:
    """The module-level ``EXCHANGE`` of ``op``'s shuffle."""
    name = _MODULES.get(type(op))
    if name is None:
        raise TypeError(f"{op!r} is not a shuffle or join")
    return importlib.import_module(f"{__name__}.{name}").EXCHANGE
