"""``encode_key``: canonical, order-preserving bytes for a shuffle key's Python value.

Canonical: equal keys give equal bytes (``1``, ``1.0`` and ``True`` are one key, as in a
Python dict). Order-preserving: for None, numbers, str, bytes, datetimes and tuples/lists
of them, the bytes sort as Python sorts the values, so group_by's runs sorted by encoded
key come out in key order. Other values are encoded by their pickles (equal within a type).
"""

from __future__ import annotations

import datetime as dt
import math
import pickle
import struct
from collections.abc import Callable
from typing import Any

# Every value starts with a type tag, so values of different types never collide and each
# encoding delimits itself (a tuple's elements can be concatenated).

NONE_TAG, _NUMBER, STR_TAG, BYTES_TAG, _TUPLE, _LIST = b"\x01", b"\x02", b"\x03", b"\x04", b"\x05", b"\x06"
_NAIVE_DATETIME, _AWARE_DATETIME, _DATE, _DICT, _SET, _OTHER = b"\x07", b"\x08", b"\x09", b"\x0a", b"\x0b", b"\x7f"
_END = b"\x00"
_EXACT_FLOAT = 2**53  # every int up to this is exactly a float
_DATETIME_MIN = dt.datetime.min
_AWARE_MIN = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
_MICROSECOND = dt.timedelta(microseconds=1)


def encode_key(value: Any) -> bytes:
    """Canonical, order-preserving bytes for a key value.

    >>> encode_key(1) == encode_key(1.0) == encode_key(True), encode_key("a") < encode_key("b")
    (True, True)
    """
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def _encode(value: Any, out: bytearray) -> None:
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        encoder = next((e for t, e in _SUBCLASS_ENCODERS if isinstance(value, t)), _encode_other)
    encoder(value, out)


def _float_bits(number: float) -> bytes:
    """8 bytes whose unsigned order is the floats' order (NaN last)."""
    (bits,) = struct.unpack(">Q", struct.pack(">d", number))
    bits = bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits >> 63 else bits | (1 << 63)
    return bits.to_bytes(8, "big")


_NAN_BITS = _float_bits(math.nan)


def _encode_number(value: int | float, out: bytearray) -> None:
    # A float prefix orders every number; an int a float cannot hold exactly (and a
    # float too large to have a fraction) adds its exact value, so 2**60 + 1 != 2**60.
    exact: int | None = None
    if isinstance(value, float):
        if value != value:
            out += _NUMBER + _NAN_BITS + b"\x01"
            return
        number = value or 0.0  # -0.0 == 0.0
        if number.is_integer() and abs(number) > _EXACT_FLOAT:
            exact = int(number)
    else:
        exact = int(value)
        try:
            number = float(exact)
        except OverflowError:
            number = math.inf if exact > 0 else -math.inf
        if abs(exact) <= _EXACT_FLOAT:
            exact = None
    out += _NUMBER + _float_bits(number)
    if exact is None:
        out += b"\x01"
    else:
        magnitude = abs(exact).to_bytes((abs(exact).bit_length() + 7) // 8, "big")
        if exact < 0:  # bigger magnitudes sort first: invert length and bytes
            out += b"\x00" + (0xFFFF_FFFF - len(magnitude)).to_bytes(4, "big") + bytes(255 - b for b in magnitude)
        else:
            out += b"\x02" + len(magnitude).to_bytes(4, "big") + magnitude


def _escaped(data: bytes, out: bytearray) -> None:
    # 00 -> 00 FF and a 00 00 terminator keep bytes order and make the end unambiguous.
    out += data.replace(b"\x00", b"\x00\xff")
    out += b"\x00\x00"


def _encode_str(value: str, out: bytearray) -> None:
    out += STR_TAG
    _escaped(value.encode("utf-8", "surrogatepass"), out)


def _encode_bytes(value: bytes | bytearray | memoryview, out: bytearray) -> None:
    out += BYTES_TAG
    _escaped(bytes(value), out)


def _sequence_encoder(tag: bytes) -> Callable[[Any, bytearray], None]:
    def encode(value: Any, out: bytearray) -> None:
        out += tag
        for item in value:
            _encode(item, out)
        out += _END  # every item starts with a tag >= 01, so a prefix sorts first

    return encode


def _encode_none(value: None, out: bytearray) -> None:
    out += NONE_TAG


def _encode_datetime(value: dt.datetime, out: bytearray) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        out += _NAIVE_DATETIME + ((value - _DATETIME_MIN) // _MICROSECOND).to_bytes(8, "big")
    else:  # aware datetimes are equal when they are the same instant
        out += _AWARE_DATETIME + ((value - _AWARE_MIN) // _MICROSECOND).to_bytes(8, "big")


def _encode_date(value: dt.date, out: bytearray) -> None:
    out += _DATE + value.toordinal().to_bytes(4, "big")


def _encode_dict(value: dict, out: bytearray) -> None:
    out += _DICT
    for item in sorted(encode_key(k) + encode_key(v) for k, v in value.items()):
        out += item
    out += _END


def _encode_set(value: set | frozenset, out: bytearray) -> None:
    out += _SET
    for item in sorted(encode_key(v) for v in value):
        out += item
    out += _END


def _encode_other(value: Any, out: bytearray) -> None:
    # Equal objects of other types (dataclasses, ...) are one key when they pickle alike.
    out += _OTHER
    _escaped(f"{type(value).__module__}.{type(value).__qualname__}".encode(), out)
    _escaped(pickle.dumps(value, protocol=5), out)


_ENCODERS: dict[type, Callable[[Any, bytearray], None]] = {
    type(None): _encode_none,
    bool: _encode_number,
    int: _encode_number,
    float: _encode_number,
    str: _encode_str,
    bytes: _encode_bytes,
    tuple: _sequence_encoder(_TUPLE),
    list: _sequence_encoder(_LIST),
    dt.datetime: _encode_datetime,
    dt.date: _encode_date,
    dict: _encode_dict,
    frozenset: _encode_set,
    set: _encode_set,
}
# Subclasses (IntEnum, namedtuple, ...) compare like their base; datetime before date.
_SUBCLASS_ENCODERS = [
    (bool, _encode_number),
    (int, _encode_number),
    (float, _encode_number),
    (str, _encode_str),
    ((bytes, bytearray, memoryview), _encode_bytes),
    (tuple, _ENCODERS[tuple]),
    (list, _ENCODERS[list]),
    (dt.datetime, _encode_datetime),
    (dt.date, _encode_date),
    (dict, _encode_dict),
    ((set, frozenset), _encode_set),
]
