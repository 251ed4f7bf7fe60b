"""Zephyr's expressions (``col``, ``lit``) as Polars expressions, with Zephyr's two extra uses.

``col("meta")["lang"]`` reads a struct field (Polars: ``pl.col("meta").struct.field("lang")``),
and ``expr.evaluate(row)`` computes an expression on one dict row, a missing column being None.
Everything else (comparisons, arithmetic, ``&``, ``|``, ``~``, ``is_null()``, ``is_not_null()``)
is Polars' own, so the result goes wherever a Polars expression goes: ``filter``,
``with_columns``, ``aggregate``, ``InputFileSpec(filter_expr=...)``.

>>> from zephyr_arrow import col
>>> (col("meta")["lang"] == "en").evaluate({"meta": {"lang": "en", "score": 0.5}})
True
"""

from __future__ import annotations

from typing import Any

import polars as pl


class Expr(pl.Expr):
    """A Polars expression that also takes Zephyr's ``expr["field"]`` and ``expr.evaluate(row)``."""

    def __getitem__(self, name: str) -> Expr:
        """The struct field ``name`` of this (struct) column."""
        if not isinstance(name, str):
            raise TypeError(f"expr[...] reads a struct field by name (str), got {name!r}")
        return Expr._from_pyexpr(self.struct.field(name)._pyexpr)

    def evaluate(self, record: dict) -> Any:
        """This expression on one dict row; a column the row lacks is None (as in Zephyr)."""
        return evaluate(self, record)


def _keeping_zephyrs_uses(name: str) -> Any:
    """Polars' method ``name``, giving an ``Expr`` back, so ``(col("a") > 1).evaluate(row)`` works."""
    polars_method = getattr(pl.Expr, name)

    def method(self: Expr, *args: Any) -> Expr:
        return Expr._from_pyexpr(polars_method(self, *args)._pyexpr)

    method.__name__ = name
    method.__doc__ = polars_method.__doc__
    return method


# Zephyr's expression operators; each keeps ``expr["field"]`` and ``evaluate`` on its result.
_ZEPHYR_OPERATORS = (
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__add__", "__radd__", "__sub__", "__rsub__",
    "__mul__", "__rmul__", "__truediv__", "__rtruediv__", "__and__", "__rand__", "__or__", "__ror__", "__invert__",
    "is_null", "is_not_null",
)  # fmt: skip
for _name in _ZEPHYR_OPERATORS:
    setattr(Expr, _name, _keeping_zephyrs_uses(_name))


def evaluate(expr: pl.Expr, record: dict) -> Any:
    """``expr`` computed on one dict row (any Polars expression); a column the row lacks is None."""
    row = {name: record.get(name) for name in expr.meta.root_names()}
    frame = pl.DataFrame([row]) if row else pl.DataFrame({"__row": [0]})
    return frame.select(expr.alias("__value")).item()


def col(name: str) -> Expr:
    """The column ``name`` (``pl.col``), whose struct fields ``col(name)["field"]`` reads."""
    return Expr._from_pyexpr(pl.col(name)._pyexpr)


def lit(value: Any) -> Expr:
    """A constant (``pl.lit``)."""
    return Expr._from_pyexpr(pl.lit(value)._pyexpr)
