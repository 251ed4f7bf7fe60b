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
from typing import Any

# Names through which a function could see its own frame's locals: a row there is partial.
_FRAME_ACCESS = frozenset({"locals", "vars", "eval", "exec", "_getframe", "currentframe", "f_locals", "tb_frame", "f_back"})
_CALLS = frozenset({"CALL", "CALL_METHOD", "CALL_FUNCTION"})
_SKIPPED = frozenset({"EXTENDED_ARG", "PRECALL", "CACHE"})  # no effect on the stack


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


def _code(fn: Callable[..., Any], arguments: int) -> types.CodeType | None:
    """The code of a plain Python function taking ``arguments`` positionally, else None."""
    if type(fn) is not types.FunctionType:
        return None
    code = fn.__code__
    if code.co_argcount < arguments or _FRAME_ACCESS & set(code.co_names):
        return None
    return code


class _Reads:
    """The fields read through the locals ``row`` (rows) and ``rows`` (iterables of rows) of ``code``."""

    def __init__(self, code: types.CodeType, rows: tuple[str, ...], row: tuple[str, ...]) -> None:
        if _FRAME_ACCESS & set(code.co_names):
            raise _Unknown
        self.fields: set[str] = set()
        self._instructions: list[dis.Instruction] = []
        self._targets: set[int] = set()  # indices of instructions a jump may land on
        for instruction in dis.get_instructions(code):
            if instruction.is_jump_target:  # on a skipped one: on the next one kept
                self._targets.add(len(self._instructions))
            if instruction.opname not in _SKIPPED:
                self._instructions.append(instruction)
        self._rows = set(rows)
        self._row = set(row)
        # Loop targets over rows become rows themselves; find them first, then check every use.
        for index, instruction in enumerate(self._instructions):
            if instruction.opname in ("LOAD_FAST", "LOAD_FAST_CHECK") and instruction.argval in self._rows:
                target = self._loop_target(index)
                if target is not None:
                    self._row.add(target)
        tracked = self._rows | self._row
        if tracked & set(code.co_cellvars + code.co_freevars):
            raise _Unknown  # captured by an inner function
        for index, instruction in enumerate(self._instructions):
            if "FAST" not in instruction.opname:
                continue
            names = instruction.argval if isinstance(instruction.argval, tuple) else (instruction.argval,)
            if not tracked & set(names):
                continue
            if isinstance(instruction.argval, tuple):
                raise _Unknown  # a superinstruction on two locals (Python 3.13)
            if instruction.opname in ("STORE_FAST", "DELETE_FAST"):
                if not (instruction.argval in self._row and self._stored_by_loop(index)):
                    raise _Unknown
            elif instruction.opname not in ("LOAD_FAST", "LOAD_FAST_CHECK"):
                raise _Unknown  # a superinstruction, a load-and-clear: a pattern not followed here
            elif instruction.argval in self._row:
                self._read_field(index)
            else:
                self._iterate(index)

    def _at(self, index: int) -> dis.Instruction | None:
        return self._instructions[index] if 0 <= index < len(self._instructions) else None

    def _opname(self, index: int) -> str:
        instruction = self._at(index)
        return instruction.opname if instruction is not None else ""

    def _loop_target(self, index: int) -> str | None:
        """The local that ``for target in rows`` stores each row in, for ``rows`` loaded at ``index``."""
        step = index + 1
        if self._opname(step) == "GET_ITER":
            step += 1
        if self._opname(step) == "FOR_ITER" and self._opname(step + 1) == "STORE_FAST":
            return self._at(step + 1).argval
        return None

    def _stored_by_loop(self, index: int) -> bool:
        """Whether the store at ``index`` is ``for row in rows`` storing each row."""
        if self._opname(index - 1) != "FOR_ITER":
            return False
        load = index - 2 if self._opname(index - 2) != "GET_ITER" else index - 3
        return self._opname(load) in ("LOAD_FAST", "LOAD_FAST_CHECK") and self._at(load).argval in self._rows

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
            try:
                self.fields |= _Reads(code.argval, rows=(".0",), row=()).fields
            except RecursionError:
                raise _Unknown from None
            return
        raise _Unknown

    def _jumped_into(self, start: int, stop: int) -> bool:
        """Whether a jump lands on an instruction in ``start..stop``: the stack there may come from elsewhere."""
        return any(index in self._targets for index in range(start, stop + 1))


def _is_str_constant(instruction: dis.Instruction | None) -> bool:
    return instruction is not None and instruction.opname == "LOAD_CONST" and isinstance(instruction.argval, str)
