"""Which fields of a dict row a Python function reads, found in its bytecode (nothing is run).

A row function gets whole rows decoded from Arrow, every column of them, though most read a
field or two: ``lambda d: domain(d["url"])`` over web documents decodes each text only to
drop it. When a function's code shows every use of its row argument, and each use reads one
field named by a constant (``row["url"]``, ``row.get("url", None)``, ``"url" in row``), the
row can be given those fields alone and the function cannot tell: the planner reads, moves
and decodes only those columns. Any other use (the row passed on, returned, iterated,
stored, unpacked, captured by an inner function, read with a computed name, ``locals()``)
gives None: every column, as before. Unknown bytecode gives None too, so a Python whose
compiler emits other patterns only loses the saving.

For a reducer ``fn(key, rows)`` the rows are followed through ``for row in rows`` and
generator expressions and comprehensions over them (``sum(r["n"] for r in rows)``).
"""

from __future__ import annotations

import dis
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Names through which a function could see its own frame's locals: a row there is partial.
_FRAME_ACCESS = frozenset({"locals", "vars", "eval", "exec", "_getframe", "currentframe", "f_locals", "tb_frame", "f_back"})
_CALLS = frozenset({"CALL", "CALL_METHOD", "CALL_FUNCTION"})
_SKIPPED = frozenset({"EXTENDED_ARG", "PRECALL", "CACHE"})  # no effect on the stack
_LOADS = frozenset({"LOAD_FAST", "LOAD_FAST_CHECK"})


class _Unknown(Exception):
    """The code uses a row in a way that may read any field."""


def fields_of_row(fn: Callable[..., Any]) -> frozenset[str] | None:
    """The fields ``fn(row)`` reads from ``row``, or None when its code does not show them all.

    >>> sorted(fields_of_row(lambda d: d["url"].split("/")[2] if d.get("lang") == "en" else None))
    ['lang', 'url']
    >>> fields_of_row(lambda d: len(d)) is None
    True
    """
    code = _code(fn, 1)
    if code is None:
        return None
    try:
        return frozenset(_Reads(code, rows=(), row=(code.co_varnames[0],)).fields)
    except _Unknown:
        return None


def fields_of_rows(fn: Callable[..., Any]) -> frozenset[str] | None:
    """The fields ``fn(key, rows)`` (a reducer) reads from each row of ``rows``, or None when its code does not show them all.

    >>> sorted(fields_of_rows(lambda key, rows: {"key": key, "total": sum(r["n"] for r in rows)}))
    ['n']
    >>> fields_of_rows(lambda key, rows: list(rows)) is None
    True
    """
    code = _code(fn, 2)
    if code is None:
        return None
    try:
        return frozenset(_Reads(code, rows=(code.co_varnames[1],), row=()).fields)
    except _Unknown:
        return None


def field_getter(fn: Callable[..., Any]) -> str | None:
    """The field ``fn(row)`` returns as it is (its whole code is ``return row[name]``), else None.

    >>> field_getter(lambda d: d["text"]), field_getter(lambda d: d["text"].lower())
    ('text', None)
    """
    code = _code(fn, 1)
    if code is None:
        return None
    body = [op for op in _ops(code) if op.opname not in ("RESUME", "NOP")]
    if [op.opname for op in body] != ["LOAD_FAST", "LOAD_CONST", "BINARY_SUBSCR", "RETURN_VALUE"]:
        return None
    row, name = body[0].argval, body[1].argval
    return name if row == code.co_varnames[0] and isinstance(name, str) else None


def names_fields(fn: Callable[..., Any]) -> bool:
    """Whether ``fn(row)``'s code reads a field of its row by name (``row["url"]``, ``row.get(...)``),
    which fails on anything but a dict row; False when the row local is reassigned.

    >>> names_fields(lambda d: {**d, "n": len(d["text"])}), names_fields(lambda path: "2024" in path)
    (True, False)
    """
    code = _code(fn, 1)
    if code is None:
        return False
    row = code.co_varnames[0]
    body = _ops(code)
    if any(op.opname in ("STORE_FAST", "DELETE_FAST") and op.argval == row for op in body):
        return False
    for index, op in enumerate(body[:-2]):
        if op.opname in _LOADS and op.argval == row:
            after = body[index + 1]
            if _is_str_constant(after) and body[index + 2].opname == "BINARY_SUBSCR":
                return True
            if after.opname in ("LOAD_METHOD", "LOAD_ATTR") and after.argval == "get":
                return True
    return False


def _code(fn: Callable[..., Any], arguments: int) -> types.CodeType | None:
    """The code of a plain Python function taking ``arguments`` positionally, else None."""
    if type(fn) is not types.FunctionType:
        return None
    code = fn.__code__
    if code.co_argcount < arguments or _FRAME_ACCESS & set(code.co_names):
        return None
    return code


@dataclass(frozen=True, slots=True)
class _Op:
    """One instruction, with superinstructions (Python 3.13's ``LOAD_FAST_LOAD_FAST``...) split."""

    opname: str
    argval: Any
    arg: int | None
    target: bool  # a jump may land here: the stack may come from elsewhere


def _ops(code: types.CodeType) -> list[_Op]:
    ops: list[_Op] = []
    target = False
    for instruction in dis.get_instructions(code):
        target = target or instruction.is_jump_target  # a jump to a skipped instruction lands on the next
        if instruction.opname in _SKIPPED:
            continue
        parts = instruction.opname.split("_FAST_")
        if len(parts) == 2 and isinstance(instruction.argval, tuple):  # e.g. STORE_FAST_LOAD_FAST (a, b)
            first, second = instruction.argval
            ops.append(_Op(parts[0] + "_FAST", first, None, target))
            ops.append(_Op(parts[1] if parts[1].endswith("FAST") else parts[1] + "_FAST", second, None, False))
        else:
            ops.append(_Op(instruction.opname, instruction.argval, instruction.arg, target))
        target = False
    return ops


class _Reads:
    """The fields read through the locals ``row`` (rows) and ``rows`` (iterables of rows) of ``code``.

    Every load of a tracked local must be a pattern below; stores to one are free (a row that
    is not one only adds fields). Rows reach other locals only as loop targets.
    """

    def __init__(self, code: types.CodeType, rows: tuple[str, ...], row: tuple[str, ...]) -> None:
        if _FRAME_ACCESS & set(code.co_names):
            raise _Unknown
        self.fields: set[str] = set()
        self._ops = _ops(code)
        self._rows = set(rows)
        self._row = set(row)
        for index, op in enumerate(self._ops):  # loop targets over rows hold rows
            if op.opname in _LOADS and op.argval in self._rows:
                target = self._loop_target(index)
                if target is not None:
                    self._row.add(target)
        tracked = self._rows | self._row
        if tracked & set(code.co_cellvars + code.co_freevars):
            raise _Unknown  # captured by an inner function
        for index, op in enumerate(self._ops):
            if "FAST" not in op.opname:
                continue
            if isinstance(op.argval, tuple):  # a superinstruction not split above
                if tracked & set(op.argval):
                    raise _Unknown
                continue
            if op.argval not in tracked or op.opname in ("STORE_FAST", "DELETE_FAST"):
                continue
            if op.opname == "LOAD_FAST_AND_CLEAR" and op.argval in self._row and self._comprehension_at(index):
                continue  # the value before an inlined comprehension, stored back after it
            if op.opname not in _LOADS:
                raise _Unknown
            if op.argval in self._row:
                self._read_field(index)
            else:
                self._iterate(index)

    def _at(self, index: int) -> _Op | None:
        return self._ops[index] if 0 <= index < len(self._ops) else None

    def _opname(self, index: int) -> str:
        op = self._at(index)
        return op.opname if op is not None else ""

    def _comprehension_at(self, index: int) -> bool:
        """Whether ``index`` starts an inlined comprehension's set-up (Python 3.12+): save the
        loop variable, build the result, then the loop."""
        names = [self._opname(index + step) for step in range(5)]
        return names[0] == "LOAD_FAST_AND_CLEAR" and names[1] == names[3] == "SWAP" and names[2].startswith("BUILD_") and names[4] == "FOR_ITER"

    def _loop_target(self, index: int) -> str | None:
        """The local that ``for target in rows`` stores each row in, for ``rows`` loaded at ``index``."""
        step = index + 1
        if self._opname(step) == "GET_ITER":
            step += 1
            if self._comprehension_at(step):
                step += 4
        if self._opname(step) == "FOR_ITER" and self._opname(step + 1) == "STORE_FAST":
            return self._at(step + 1).argval
        return None

    def _read_field(self, index: int) -> None:
        """A row loaded at ``index``: only ``row[const]``, ``row.get(const[, const])`` or ``const in row``."""
        after = self._at(index + 1)
        if _is_str_constant(after) and self._opname(index + 2) == "BINARY_SUBSCR":
            self.fields.add(after.argval)
            return
        if after is not None and after.opname in ("LOAD_METHOD", "LOAD_ATTR") and after.argval == "get":
            key = self._at(index + 2)
            arguments = 1 + (self._opname(index + 3) == "LOAD_CONST")
            call = self._at(index + 2 + arguments)
            if _is_str_constant(key) and call is not None and call.opname in _CALLS and call.arg == arguments:
                if not self._jumped_into(index + 1, index + 2 + arguments):
                    self.fields.add(key.argval)
                    return
        before = self._at(index - 1)
        if _is_str_constant(before) and self._opname(index + 1) == "CONTAINS_OP" and not self._jumped_into(index, index + 1):
            self.fields.add(before.argval)
            return
        raise _Unknown

    def _iterate(self, index: int) -> None:
        """Rows loaded at ``index``: only looped over, or handed to a generator expression or comprehension."""
        if self._loop_target(index) is not None:
            return
        make = self._at(index - 1)
        code = self._at(index - 2) if make is not None and make.opname == "MAKE_FUNCTION" else None
        if code is not None and code.opname == "LOAD_CONST" and isinstance(code.argval, str):
            code = self._at(index - 3)  # Python 3.10 loads the qualified name between
        if (
            code is not None and code.opname == "LOAD_CONST" and isinstance(code.argval, types.CodeType)
            and self._opname(index + 1) == "GET_ITER" and self._opname(index + 2) in _CALLS
            and code.argval.co_varnames[:1] == (".0",)
        ):
            self.fields |= _Reads(code.argval, rows=(".0",), row=()).fields
            return
        raise _Unknown

    def _jumped_into(self, start: int, stop: int) -> bool:
        """Whether a jump lands on an instruction in ``start..stop``: the stack there may come from elsewhere."""
        return any(self._at(index).target for index in range(start, stop + 1))


def _is_str_constant(instruction: dis.Instruction | None) -> bool:
    return instruction is not None and instruction.opname == "LOAD_CONST" and isinstance(instruction.argval, str)
