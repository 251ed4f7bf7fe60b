"""Checks of Dataset method arguments: a wrong one is a PlanError, raised where the method is
called, that names the method and shows the value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zephyr_arrow.errors import PlanError


def check_callable(method: str, name: str, value: Any) -> None:
    if not callable(value):
        raise PlanError(f"{method}() needs a callable {name}, got {value!r} ({type(value).__name__})")


def check_positive_int(method: str, name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PlanError(f"{method}() needs {name} to be an int >= {minimum}, got {value!r}")


def is_polars_expr(value: Any) -> bool:
    """A Polars expression, or a subclass of one (``zephyr_arrow.col`` makes those), without importing Polars."""
    return any(kind.__module__.startswith("polars") and kind.__name__ == "Expr" for kind in type(value).__mro__)


def check_columns(method: str, columns: Any) -> tuple[str, ...]:
    if isinstance(columns, str):
        columns = (columns,)
    columns = tuple(columns)
    if not columns or not all(isinstance(c, str) and c for c in columns):
        raise PlanError(f"{method}() needs one or more column names (non-empty strings), got {columns!r}")
    return columns


def check_key(method: str, name: str, key: Any) -> Callable[[Any], Any] | tuple[str, ...]:
    if callable(key):
        return key
    if isinstance(key, str) or (isinstance(key, (list, tuple)) and key):
        return check_columns(method, key)
    raise PlanError(f"{method}() needs {name} to be a function of the row or column name(s), got {key!r}")


def check_num_output_shards(method: str, value: Any) -> int | None:
    if value is not None:
        check_positive_int(method, "num_output_shards", value)
    return value
