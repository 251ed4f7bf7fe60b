"""Tests for zephyr_arrow.arrow.rows: every rule of the codec, in memory and through Parquet."""

from __future__ import annotations

import dataclasses
import datetime as dt
import doctest
import io
from decimal import Decimal
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zephyr_arrow.arrow import rows as rows_module
from zephyr_arrow.arrow.rows import (
    ABSENT_COLUMN,
    ITEM_COLUMN,
    ITEM_METADATA_KEY,
    PICKLED_METADATA_KEY,
    is_item_schema,
    pickled_columns,
    rows_to_table,
    table_to_rows,
)


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    label: str


class Box:
    """A plain class: it must come back as a Box, not as its __dict__."""

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return type(other) is Box and other.value == self.value


def parquet_round_trip(table: pa.Table) -> pa.Table:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    buffer.seek(0)
    return pq.read_table(buffer)


def same(expected, actual) -> bool:
    """Equal with the same types all the way down (1 is not 1.0, 1.5 is not Decimal("1.50")).

    ``actual`` dicts may hold extra keys set to None: a struct fills fields its dict lacked.
    """
    if type(expected) is not type(actual):
        return False
    if type(expected) in (list, tuple):
        return len(expected) == len(actual) and all(map(same, expected, actual))
    if type(expected) is dict:
        return expected.keys() <= actual.keys() and all(same(expected.get(k), actual[k]) for k in actual)
    if type(expected) in (float, Decimal, dt.datetime, dt.time):
        # repr tells NaN, -0.0, a Decimal's scale, a time zone's name and fold apart.
        return repr(expected) == repr(actual)
    return expected == actual


def decoded_both_ways(rows: list) -> list[list]:
    table = rows_to_table(rows)
    return [table_to_rows(table), table_to_rows(parquet_round_trip(table))]


def assert_round_trip(rows: list) -> None:
    """Decoded rows equal the input rows, typewise, keys a row lacks still lacking, keys in first-seen order."""
    all_dicts = all(type(row) is dict for row in rows)
    names = list(dict.fromkeys(key for row in rows for key in row)) if all_dicts else []
    as_columns = bool(names) and all(type(name) is str for name in names)
    for decoded in decoded_both_ways(rows):
        assert len(decoded) == len(rows)
        for want, got in zip(rows, decoded):
            assert same(want, got) and (not as_columns or want.keys() == got.keys()), (want, got)
            if as_columns:
                assert list(got) == [name for name in names if name in want]


# Strategies. Typed columns (one Python type per column) exercise the native
# path; ANY values mix everything and mostly exercise the pickled path.
TIME_ZONES = [dt.timezone.utc, dt.timezone(dt.timedelta(hours=-5, minutes=-30)), ZoneInfo("Europe/Paris")]
SCALARS = [
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(),
    st.floats(),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.datetimes(),
    st.datetimes(timezones=st.sampled_from(TIME_ZONES)),
    st.dates(),
    st.times(),
    st.timedeltas(),
    st.decimals(places=2, allow_nan=False),
    st.decimals(),
]
PICKLED_ONLY = [
    st.tuples(st.integers(), st.text(max_size=3)),
    st.sets(st.integers(), max_size=3),
    st.frozensets(st.text(max_size=3), max_size=3),
    st.builds(Point, st.integers(), st.text(max_size=3)),
    st.builds(Box, st.integers()),
    st.dictionaries(st.integers(), st.text(max_size=3), max_size=2),
]
ANY = st.recursive(
    st.one_of(st.none(), *SCALARS, *PICKLED_ONLY),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3),
    max_leaves=6,
)
TYPED = st.recursive(
    st.sampled_from(SCALARS),
    lambda inner: st.one_of(
        inner.map(lambda values: st.lists(st.none() | values, max_size=3)),
        st.tuples(inner, inner).map(lambda ab: st.fixed_dictionaries({"a": ab[0]}, optional={"b": st.none() | ab[1]})),
    ),
    max_leaves=4,
)
COLUMN_VALUES = st.one_of(st.sampled_from(SCALARS), TYPED, st.just(ANY), st.sampled_from(PICKLED_ONLY))


@st.composite
def dict_rows(draw):
    names = draw(st.lists(st.text(max_size=3), unique=True, min_size=1, max_size=4))
    columns = {name: draw(COLUMN_VALUES) for name in names}
    rows = draw(st.lists(st.fixed_dictionaries({}, optional=columns), min_size=1, max_size=8))
    # Rows do not share one key order; the first-seen order decides the columns.
    return [dict(draw(st.permutations(list(row.items())))) for row in rows]


@st.composite
def item_rows(draw):
    return draw(st.lists(st.none() | draw(COLUMN_VALUES), max_size=8))


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(dict_rows())
def test_dict_rows_round_trip(rows):
    assert_round_trip(rows)


@FAST
@given(item_rows())
def test_item_rows_round_trip(rows):
    assert_round_trip(rows)


@FAST
@given(st.lists(ANY | dict_rows().flatmap(lambda rows: st.sampled_from(rows or [{}])), max_size=8))
def test_mixed_rows_round_trip(rows):
    assert_round_trip(rows)


# Dict rows.


def test_dict_rows_become_columns_in_first_seen_order():
    table = rows_to_table([{"b": 1, "a": "x"}, {"a": "y", "c": 2.5}])
    assert table.schema.names == ["b", "a", "c", ABSENT_COLUMN]
    assert table.column(ABSENT_COLUMN).to_pylist() == [["c"], ["b"]]
    assert not is_item_schema(table.schema)
    for decoded in decoded_both_ways([{"b": 1, "a": "x"}, {"a": "y", "c": 2.5}]):
        assert decoded == [{"b": 1, "a": "x"}, {"a": "y", "c": 2.5}]
        assert [list(row) for row in decoded] == [["b", "a"], ["a", "c"]]


def test_a_row_lacking_a_key_differs_from_one_holding_none():
    rows = [{"id": 1, "score": None}, {"id": 2}, {"id": 3, "score": 7}]
    for decoded in decoded_both_ways(rows):
        assert decoded == rows and ["score" in row for row in decoded] == [True, False, True]
    assert ABSENT_COLUMN not in rows_to_table([{"id": 1, "score": None}, {"id": 2, "score": 3}]).column_names


def test_nested_dicts_and_lists_are_structs_and_lists():
    rows = [{"meta": {"lang": "en", "tags": ["a"]}}, {"meta": {"lang": "fr", "score": 0.5}}]
    table = rows_to_table(rows)
    assert table.schema.field("meta").type == pa.struct(
        [("lang", pa.string()), ("tags", pa.list_(pa.string())), ("score", pa.float64())]
    )
    for decoded in decoded_both_ways(rows):
        assert decoded == [
            {"meta": {"lang": "en", "tags": ["a"], "score": None}},
            {"meta": {"lang": "fr", "tags": None, "score": 0.5}},
        ]


@pytest.mark.parametrize(
    ("value", "arrow_type"),
    [
        (True, pa.bool_()),
        (-(2**63), pa.int64()),
        (float("nan"), pa.float64()),
        ("\x00é", pa.string()),
        (b"\x00", pa.binary()),
        (dt.datetime(2024, 5, 1, 12, 30, 0, 7), pa.timestamp("us")),
        (dt.datetime(2024, 5, 1, tzinfo=ZoneInfo("Europe/Paris")), pa.timestamp("us", "Europe/Paris")),
        (dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc), pa.timestamp("us", "+00:00")),
        (dt.date(1, 1, 1), pa.date32()),
        (dt.time(23, 59, 59, 999999), pa.time64("us")),
        (dt.timedelta(days=-3, microseconds=1), pa.duration("us")),
        (Decimal("-12.50"), pa.decimal128(38, 2)),
        (Decimal("1" * 60 + ".5"), pa.decimal256(76, 1)),
        ([[1, None], []], pa.list_(pa.list_(pa.int64()))),
        ([], pa.list_(pa.null())),
        (None, pa.null()),
    ],
)
def test_native_types(value, arrow_type):
    rows = [{"v": value}, {"v": None}]
    table = rows_to_table(rows)
    assert table.schema.field("v").type == arrow_type
    assert pickled_columns(table.schema) == []
    assert_round_trip(rows)


def test_time_zone_survives_with_its_own_tzinfo():
    utc = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    for decoded in decoded_both_ways([{"t": utc}]):
        assert decoded[0]["t"].tzinfo is dt.timezone.utc


# Items.


@pytest.mark.parametrize(
    "rows",
    [
        [1, 2, 3],
        ["gs://bucket/a.jsonl", "gs://bucket/b.jsonl"],
        [0.5, None],
        [(1, "a"), (2, "b")],
        [{"a": 1}, 5],
        [{1: "a"}],
        [{}, {}],
        [[1, 2], []],
        [None],
    ],
)
def test_non_dict_rows_are_items(rows):
    table = rows_to_table(rows)
    assert table.schema.names == [ITEM_COLUMN]
    assert table.schema.metadata == {ITEM_METADATA_KEY: b"1"}
    assert is_item_schema(table.schema)
    assert_round_trip(rows)


# Pickled columns.


@pytest.mark.parametrize(
    "values",
    [
        [(1, 2)],
        [{1, 2}],
        [frozenset({"a"})],
        [Point(1, "a")],
        [Box([1])],
        [{1: "a"}],
        [{}],
        [{"a": 1}, {}, {"b": {}}],
        [[1, "a"]],
        [[1], [2.5]],
        [1, 2.0],
        [True, 1],
        [2**63],
        [[-(2**63) - 1]],
        ["\ud800"],
        [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)],
        [dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2024, 1, 1, tzinfo=ZoneInfo("UTC"))],
        [dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2), "CEST"))],
        [dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(seconds=30)))],
        [dt.datetime(2024, 1, 1, tzinfo=ZoneInfo("Europe/Paris")), dt.datetime(2024, 3, 31, 2, 30, tzinfo=ZoneInfo("Europe/Paris"))],  # in the DST gap
        [dt.datetime(2024, 10, 27, 2, 30, fold=1)],
        [dt.time(1, tzinfo=dt.timezone.utc)],
        [dt.timedelta(days=999_999_999)],
        [Decimal("1.5"), Decimal("1.50")],
        [Decimal("NaN")],
        [Decimal("-0.0")],
        [Decimal("1E+3")],
        [Decimal("1" * 80)],
        [Decimal("1." + "1" * 80)],
    ],
)
def test_values_arrow_cannot_hold_exactly_are_pickled(values):
    rows = [{"id": index, "v": value} for index, value in enumerate(values)] + [{"id": -1, "v": None}]
    table = rows_to_table(rows)
    assert pickled_columns(table.schema) == ["v"]
    assert table.schema.field("v").metadata == {PICKLED_METADATA_KEY: b"1"}
    assert table.schema.field("id").type == pa.int64()
    assert_round_trip(rows)


def test_dataclass_comes_back_as_its_class():
    for decoded in decoded_both_ways([Point(1, "a"), Point(2, "b")]):
        assert decoded == [Point(1, "a"), Point(2, "b")]
        assert type(decoded[0]) is Point


def test_unpicklable_value_names_its_column():
    with pytest.raises(TypeError, match="column 'fn'") as raised:
        rows_to_table([{"fn": lambda: None}])
    assert raised.value.__cause__ is not None


# Empty and null.


def test_no_rows_is_a_table_without_columns():
    table = rows_to_table([])
    assert table.num_columns == 0 and table.num_rows == 0
    assert decoded_both_ways([]) == [[], []]


def test_column_of_only_none_is_null():
    table = rows_to_table([{"a": None, "b": 1}, {"b": 2}])
    assert table.schema.field("a").type == pa.null()
    assert decoded_both_ways([{"a": None, "b": 1}, {"b": 2}])[1] == [{"a": None, "b": 1}, {"b": 2}]


def test_parquet_corner_cases():
    rows = [
        {"empty": [], "nulls": [None], "blob": "x" * 5_000_000, "struct": {"n": None}},
        {"empty": [], "nulls": None, "blob": "", "struct": None},
    ]
    table = rows_to_table(rows)
    assert table.schema.field("nulls").type == pa.list_(pa.null())
    assert table.schema.field("struct").type == pa.struct([("n", pa.null())])
    assert pickled_columns(table.schema) == []
    assert_round_trip(rows)


# Tables the codec did not write itself.


def test_promoted_chunks_decode_what_they_hold():
    first = rows_to_table([{"n": 2.5, "p": (1, 2), "s": {"x": 1, "y": "q"}, "extra": "z"}])
    second = rows_to_table([{"n": 1, "p": None, "s": {"x": 2}}])
    # The permissive concat is the readers' unification: int64 -> double, missing columns and fields -> null.
    unified = pa.concat_tables([first, second], promote_options="permissive")
    assert table_to_rows(parquet_round_trip(unified)) == [
        {"n": 2.5, "p": (1, 2), "s": {"x": 1, "y": "q"}, "extra": "z"},
        {"n": 1.0, "p": None, "s": {"x": 2, "y": None}, "extra": None},
    ]
    assert type(table_to_rows(unified)[1]["n"]) is float


def test_table_without_metadata_decodes_to_dicts():
    user_table = pa.table(
        {"item": pa.array(["a", "b"], pa.large_string()), "blob": pa.array([b"\x80", None], pa.large_binary())}
    )
    assert table_to_rows(parquet_round_trip(user_table)) == [{"item": "a", "blob": b"\x80"}, {"item": "b", "blob": None}]


def test_docstring_examples():
    result = doctest.testmod(rows_module)
    assert result.attempted > 0 and result.failed == 0


def test_dict_rows_with_an_item_key_stay_dicts():
    table = rows_to_table([{"item": 1}])
    assert not is_item_schema(table.schema)
    assert decoded_both_ways([{"item": 1}]) == [[{"item": 1}]] * 2
