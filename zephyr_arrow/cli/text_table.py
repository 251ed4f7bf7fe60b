"""Plain-text tables and sizes for the terminal (the ``zephyr-arrow`` command and the demo).

Only the standard library: printing a table loads nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], more: bool = False) -> str:
    """Rows as an aligned text table (numbers right-aligned, NULL for None), with a row count.

    >>> print(format_table(["name", "n"], [("a", 1), ("bb", None)]))
     name | n
    ------+------
     a    |    1
     bb   | NULL
    (2 rows)
    """
    cells = [[_format_value(v) for v in row] for row in rows]
    numeric = [
        bool(rows) and all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) for i in range(len(columns))
    ]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(columns)]

    def line(values: Sequence[str], align_numbers: bool) -> str:
        parts = [v.rjust(w) if align_numbers and num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return (" " + " | ".join(parts)).rstrip()

    lines = [line(columns, False), "-" + "-+-".join("-" * w for w in widths) + "-"]
    lines.extend(line(row, True) for row in cells)
    count = f"{len(rows)} row{'' if len(rows) == 1 else 's'}"
    lines.append(f"(first {count}; more not shown)" if more else f"({count})")
    return "\n".join(lines)


def _format_value(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return repr(value)
        if abs(value) >= 1e15 or abs(value) < 1e-4:
            return f"{value:.6g}"
        return f"{value:.4f}".rstrip("0")
    text = str(value).replace("\n", "\\n")
    return text if len(text) <= 60 else text[:59] + "…"


def human_bytes(num_bytes: int) -> str:
    size = float(num_bytes)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
