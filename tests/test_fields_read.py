"""fields_read: the fields a row function reads, from its bytecode; None whenever it could read more."""

from __future__ import annotations

import functools
import json
import operator

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from zephyr_arrow.ops import fields_read
from zephyr_arrow.ops.fields_read import fields_of_row, fields_of_rows

SAMPLE_ROWS = [
    {"url": "https://a.org/x", "lang": "en", "score": 0.7, "text": "one two", "meta": {"k": 1}, "n": 3},
    {"url": "https://b.org/y", "lang": None, "score": 0.2, "text": "three", "meta": {"k": 2}, "n": None},
    {"url": "https://c.org/z", "lang": "de", "score": 0.9, "text": "", "meta": {"k": 3}, "n": 0},
]


def _two_statements(row):
    host = row["url"].split("/")[2]
    if "lang" in row and row.get("lang") == "en":
        return host
    return row.get("score", 0.0) > 0.5


def _rebinds(row):
    row = {"url": "elsewhere"}
    return row["url"]


def _locals(row):
    return sorted(locals()["row"])


def _captured(row):
    return (lambda: row)()["url"]


def _stores(row):
    row["url"] = "changed"
    return row["url"]


KNOWN = [
    (lambda d: d["text"], {"text"}),
    (lambda d: d["url"].split("/")[2], {"url"}),
    (lambda d: d["score"] > 0.5 and d["lang"] == "en", {"score", "lang"}),
    (lambda d: d.get("lang"), {"lang"}),
    (lambda d: d.get("missing", "none"), {"missing"}),
    (lambda d: "lang" in d, {"lang"}),
    (lambda d: "lang" not in d or d["meta"]["k"], {"lang", "meta"}),
    (lambda d: (d["n"] or 0) + len(d["text"]), {"n", "text"}),
    (lambda d: 1, set()),
    (_two_statements, {"url", "lang", "score"}),
    (_rebinds, {"url"}),  # a field of another dict: one more field kept, no harm
]

UNKNOWN = [
    lambda d: d,  # returned
    lambda d: dict(d),  # passed on
    lambda d: json.dumps(d, sort_keys=True),
    lambda d: len(d),
    lambda d: sorted(d),  # iterated
    lambda d: {**d, "n": 1},
    lambda d: d[d["key_name"]],  # a computed name
    lambda d: d.get("url", d["text"]),  # a computed default
    lambda d: d.items(),
    lambda d: d["a"] if d else None,  # truth value: emptiness
    lambda d: d == {},
    _locals,
    _captured,
    _stores,
    operator.itemgetter("url"),  # not Python code
    functools.partial(lambda prefix, d: prefix + d["url"], "x"),
    len,
]


@pytest.mark.parametrize("fn, fields", KNOWN)
def test_the_fields_a_row_function_reads(fn, fields):
    assert fields_of_row(fn) == fields


@pytest.mark.parametrize("fn, fields", KNOWN)
def test_a_row_of_just_those_fields_gives_the_same_result(fn, fields):
    for row in SAMPLE_ROWS:
        assert fn({k: v for k, v in row.items() if k in fields}) == fn(row)


@pytest.mark.parametrize("fn", UNKNOWN)
def test_a_function_that_may_read_more_has_unknown_fields(fn):
    assert fields_of_row(fn) is None


@pytest.mark.parametrize(
    "fn, fields",
    [
        (lambda d: ("url" if d["n"] else "text") in d, {"n", "url", "text"}),  # the name depends on the path taken
        (lambda d: [d["url"] for _ in range(2)], {"url"}),  # an inner scope before Python 3.12
    ],
)
def test_reads_the_code_may_not_show_plainly_are_all_found_or_unknown(fn, fields):
    # Compilers differ (one shares the ``in d`` of both branches, another repeats it): the
    # answer may be None, never a set missing a field.
    found = fields_of_row(fn)
    assert found is None or found == fields


def _getter(row):
    return row["text"]


@pytest.mark.parametrize(
    "fn, field",
    [
        (lambda d: d["text"], "text"),
        (_getter, "text"),
        (lambda d: d["text"].lower(), None),
        (lambda d: d.get("text"), None),  # None for a missing field, where d["text"] raises
        (lambda d, default="x": d["text"] or default, None),
        (lambda d: (d["text"]), "text"),
        (lambda d: _getter(d), None),
        (operator.itemgetter("text"), None),
    ],
)
def test_a_function_that_only_returns_a_field(fn, field):
    assert fields_read.field_getter(fn) == field


def _loop(key, rows):
    count = total = 0
    for row in rows:
        count += 1
        total += row["score"]
    return {"key": key, "n": count, "mean": total / count}


def _yields_fields(key, rows):
    for row in rows:
        yield {"key": key, "url": row["url"]}


def _yields_rows(key, rows):
    for row in rows:
        yield row


def _keeps_one(key, rows):
    first = None
    for row in rows:
        first = first or row
    return first


REDUCERS_KNOWN = [
    (_loop, {"score"}),
    (_yields_fields, {"url"}),
    (lambda key, rows: {"key": key, "n": sum(1 for _ in rows)}, set()),
    (lambda key, rows: {"key": key, "total": sum(r["n"] or 0 for r in rows if r["lang"])}, {"n", "lang"}),
    (lambda key, rows: [r["url"] for r in rows], {"url"}),
    (lambda key, rows: {r["url"]: r.get("score") for r in rows}, {"url", "score"}),
]

REDUCERS_UNKNOWN = [
    lambda key, rows: list(rows),
    lambda key, rows: next(iter(rows)),
    lambda key, rows: max(rows, key=lambda r: r["score"]),
    lambda key, rows: [r for r in rows],
    lambda key, rows: [dict(r) for r in rows],
    _yields_rows,
    _keeps_one,
]


@pytest.mark.parametrize("fn, fields", REDUCERS_KNOWN)
def test_the_fields_a_reducer_reads_from_each_row(fn, fields):
    assert fields_of_rows(fn) == fields
    partial = [{k: v for k, v in row.items() if k in fields} for row in SAMPLE_ROWS]
    result = fn("k", iter(partial))
    expected = fn("k", iter(SAMPLE_ROWS))
    assert (list(result) if hasattr(result, "__next__") else result) == (list(expected) if hasattr(expected, "__next__") else expected)


@pytest.mark.parametrize("fn", REDUCERS_UNKNOWN)
def test_a_reducer_that_keeps_or_passes_on_rows_has_unknown_fields(fn):
    assert fields_of_rows(fn) is None


# Generated functions: whenever fields are found, a row of just those fields gives the same
# result (or raises the same exception) as the whole row.

_LEAVES = ['d["a"]', 'd["b"]', 'd.get("c")', 'd.get("a", 0)', '("b" in d)', '("z" in d)', "d", "len(d)", "sorted(d)", "1", '"s"']
_SHAPES = [
    "({0} if {1} else {2})", "({0}, {1})", "({0} == {1})", "str({0})", "[{0} for _ in range(2)]",
    "({0} or {1})", "(lambda: {0})()", "sum(1 for _ in [{0}])", "{{'k': {0}}}", "[v for v in [{0}] if {1}]",
]


@st.composite
def _expressions(draw, depth=3):
    if depth == 0 or draw(st.booleans()):
        return draw(st.sampled_from(_LEAVES))
    shape = draw(st.sampled_from(_SHAPES))
    return shape.format(*(draw(_expressions(depth - 1)) for _ in range(3)))


def _outcome(fn, row):
    try:
        return ("value", fn(row))
    except Exception as error:  # noqa: BLE001 - the same error either way is what is checked
        return ("error", type(error))


@settings(max_examples=300, deadline=None)
@given(_expressions())
def test_generated_row_functions_get_the_same_result_from_a_row_of_their_fields(source):
    fn = eval(f"lambda d: {source}")  # noqa: S307 - test-generated code
    fields = fields_of_row(fn)
    if fields is None:
        return
    for row in ({"a": 1, "b": None, "c": "x", "e": 2.5}, {"a": 0, "c": None}, {"b": [1], "e": {"f": 1}}, {}):
        assert _outcome(fn, {k: v for k, v in row.items() if k in fields}) == _outcome(fn, row), (source, fields)
