"""Map-side pre-aggregation for ``aggregate``: each sorted run is folded per key before it is written.

An aggregation made only of ``pl.len()`` and ``pl.col(c).len() / count() / sum() / min() /
max() / mean()`` (aliased or not) splits into a partial, computed per key over each run
by the scatter, and a final over the partials, computed by the reduce: lengths and counts
add up; sums, minima and maxima apply again; a mean is the count-weighted mean of the
runs' means, cast back to the type Polars gives a mean of that column. No choice depends
on a column's type, so every run of a shuffle is folded alike. A run of 50,000 rows over
3,000 keys is written, and merged, as 3,000 rows. Any other expression (``first()``,
``n_unique()``, arithmetic, selectors) leaves the whole aggregation to the reduce side.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from zephyr_arrow.arrow.schema import from_polars
from zephyr_arrow.execution.shuffle import keys as K

PREFIX = "__zephyr_partial_"  # partial columns: PREFIX + index, and a mean's count PREFIX + index + "_n"
_KINDS = ("len", "count", "sum", "min", "max", "mean")


@dataclass(frozen=True)
class Part:
    """One output column of the aggregation: ``kind`` of ``column`` (None for ``pl.len()``)."""

    name: str
    kind: str
    column: str | None


def split(exprs: tuple[pl.Expr, ...]) -> tuple[Part, ...] | None:
    """The aggregation as parts, or None when an expression is not one of the forms above."""
    parts = [_part(expr) for expr in exprs]
    return None if any(part is None for part in parts) else tuple(parts)


def _part(expr: pl.Expr) -> Part | None:
    try:
        name = expr.meta.output_name()
    except pl.exceptions.ComputeError:  # no single output name (selectors, pl.all())
        return None
    bare = expr.meta.undo_aliases()
    if bare.meta.eq(pl.len()):
        return Part(name, "len", None)
    roots = bare.meta.root_names()
    if len(roots) != 1:
        return None
    column = pl.col(roots[0])
    kind = next((kind for kind in _KINDS if bare.meta.eq(getattr(column, kind)())), None)
    return Part(name, kind, roots[0]) if kind is not None else None


def partials(by: tuple[str, ...], parts: tuple[Part, ...], run: pa.Table) -> pa.Table:
    """The run folded to one row per key: the key columns, the shuffle columns (the key's
    first input position) and the partial columns."""
    frame = pl.from_arrow(run)
    # A run whose rows all lack an aggregated column folds it as nulls, as the rows of the
    # runs that have it would show it (a column no row has is an error: executor.py).
    absent = {part.column for part in parts if part.column is not None and part.column not in frame.columns}
    frame = frame.with_columns(pl.lit(None).alias(name) for name in absent)
    # The hash and target are the key's; grouping by them too keeps keys that Polars
    # finds equal but that hash apart (0.0 and -0.0) in their own shards, as without folding.
    keys = [name for name in by if name in frame.columns] + [K.HASH, K.TARGET]
    exprs = []
    for index, part in enumerate(parts):
        expr = pl.len() if part.column is None else getattr(pl.col(part.column), part.kind)()
        exprs.append(expr.alias(f"{PREFIX}{index}"))
        if part.kind == "mean":
            exprs.append(pl.col(part.column).count().alias(f"{PREFIX}{index}_n"))
    folded = frame.group_by(keys).agg(*exprs, pl.col(K.POSITION).min())
    return from_polars(folded, {name: run.schema.field(name) for name in by if name in run.column_names})


def is_folded(schema: pl.Schema) -> bool:
    """Whether rows of ``schema`` are partials (runs of a shuffle with no rows keep the input's columns)."""
    return f"{PREFIX}0" in schema


def final_exprs(parts: tuple[Part, ...], schema: pl.Schema) -> list[pl.Expr]:
    """The expressions that finish the aggregation over partials of ``schema``."""
    exprs = []
    for index, part in enumerate(parts):
        value = pl.col(f"{PREFIX}{index}")
        if part.kind in ("len", "count", "sum"):
            expr = value.sum()
        elif part.kind in ("min", "max"):
            expr = getattr(value, part.kind)()
        else:
            count = pl.col(f"{PREFIX}{index}_n")
            dtype = schema[f"{PREFIX}{index}"]  # what Polars' mean gives for the column
            mean = (value.cast(pl.Float64) * count).sum() / count.sum()
            expr = pl.when(count.sum() > 0).then(mean).cast(dtype)
        exprs.append(expr.alias(part.name))
    return exprs
