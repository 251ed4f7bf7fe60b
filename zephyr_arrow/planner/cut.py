"""Cutting a Dataset's ops into stages. Pure: reads no files, runs no user code.

Row, columnar and load ops fuse into one stage; a stage ends at a sink (the sink is
its last op) and at a boundary (reshard, shuffles, joins), which becomes a stage of
its own. A shuffle (an op that ``scatters``: group_by, deduplicate, aggregate, join, sort)
has a map side: the ops before it fuse into a SCATTER stage per input, whose tasks run
them and cut the rows into sorted runs by key. The row and columnar ops after a shuffle
or join (up to a sink or the next boundary) run in its reduce tasks. So nothing is
written between a shuffle and the ops next to it. A broadcast join is no boundary: it
fuses into its left side's stage, and its right side is built first as stages of their
own, whose whole output every task of that stage reads (``Stage.broadcast``).

``plan()`` (``planner/__init__.py``) cuts the stages here, then runs the rewrite passes
of ``passes.PASSES`` over them in order; each is a function of the stages alone.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from zephyr_arrow import ops
from zephyr_arrow.planner.passes import fold_reshard_into_items
from zephyr_arrow.planner.stages import Stage, StageKind

if TYPE_CHECKING:
    from zephyr_arrow.dataset import Dataset


class Builder:
    def __init__(self) -> None:
        self.stages: list[Stage] = []

    def add(self, kind: StageKind, **fields: Any) -> int:
        self.stages.append(Stage(index=len(self.stages), kind=kind, **fields))
        return len(self.stages) - 1

    def build(self, dataset: Dataset, scatter_for: ops.Op | None = None, side: int = 0) -> int:
        """Add the stages computing ``dataset``; return the index of its last stage.

        With ``scatter_for`` (a shuffle op), the last stage is the map side of that
        shuffle's input ``side``: a SCATTER stage holding the ops not yet in a stage.
        """
        source, operations = fold_reshard_into_items(dataset.source, dataset.operations)
        fused: list[ops.Op] = []
        broadcast: list[int] = []  # the stages computing the right sides of the broadcast joins in ``fused``
        upstream: tuple[int, ...] = ()
        pending_source: ops.Source | None = source

        def close(kind: StageKind = StageKind.MAP, **fields: Any) -> int:
            nonlocal upstream, pending_source
            stage_ops = tuple(fused)
            fused.clear()
            # A shuffle's reduce tasks read no broadcast side: a broadcast join stays in a stage of its own.
            if kind is StageKind.MAP and not broadcast and self._takes_ops_after(upstream, pending_source, stage_ops):
                index = upstream[0]
                self.stages[index] = replace(self.stages[index], ops=stage_ops)
            else:
                index = self.add(kind, ops=stage_ops, inputs=upstream, source=pending_source, broadcast=tuple(broadcast), **fields)
            broadcast.clear()
            upstream, pending_source = (index,), None
            return index

        for op in operations:
            if op.scatters:
                sides = [close(StageKind.SCATTER, boundary=op)]
                if isinstance(op, ops.TwoSided):
                    sides.append(self.build(op.right, scatter_for=op, side=1))
                upstream = (self.add(_boundary_kind(op), inputs=tuple(sides), boundary=op),)
            elif op.kind is ops.Kind.BOUNDARY:
                if fused or pending_source is not None:
                    close()
                upstream = (self.add(_boundary_kind(op), inputs=upstream + self._side_inputs(op), boundary=op),)
            elif op.kind is ops.Kind.SINK:
                fused.append(op)
                close()
            else:
                if isinstance(op, ops.TwoSided):  # a broadcast join
                    broadcast.append(self.build(op.right))
                fused.append(op)
        if scatter_for is not None:
            return close(StageKind.SCATTER, boundary=scatter_for, side=side)
        if fused or pending_source is not None:
            close()
        return upstream[0]

    def _takes_ops_after(self, upstream: tuple[int, ...], source: ops.Source | None, stage_ops: tuple[ops.Op, ...]) -> bool:
        """Whether ``stage_ops`` can run in the reduce tasks of the shuffle or join just before them
        (so its output is not written and read back); a sink too: the reduce task writes the
        user's file itself (medium exact dedup, written: 48 s with a write stage of its own,
        single-process profile, which wrote and read back all 800 MB of the surviving documents)."""
        if source is not None or len(upstream) != 1:
            return False
        stage = self.stages[upstream[0]]
        return stage.kind in (StageKind.SHUFFLE, StageKind.JOIN) and not stage.ops

    def _side_inputs(self, op: ops.Op) -> tuple[int, ...]:
        return (self.build(op.right),) if isinstance(op, ops.TwoSided) else ()


def _boundary_kind(op: ops.Op) -> StageKind:
    if isinstance(op, ops.ReshardOp):
        return StageKind.RESHARD
    if isinstance(op, ops.NearDuplicatesOp):
        return StageKind.PIPELINES
    return StageKind.JOIN if isinstance(op, ops.TwoSided) else StageKind.SHUFFLE
