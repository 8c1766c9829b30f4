"""Arrays of text and of bigint sent to PostgreSQL in its binary array format.

psycopg's generic list dumper inspects every element to pick a type, and its text format
escapes strings character by character; the gathered writes of a transaction (see
:mod:`stabilize.backends.postgres._cursor`) pass about thirty arrays of known types per
statement, row bodies among them. :class:`TextArray` and :class:`BigintArray` say the type,
and their dumpers write the binary format directly (PostgreSQL's ``array_recv``: a header,
then a length and the bytes of each element, -1 for NULL).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from typing import Any

TEXT_OID = 25
TEXT_ARRAY_OID = 1009
INT8_OID = 20
INT8_ARRAY_OID = 1016

_LENGTH = struct.Struct("!i").pack
_INT8 = struct.Struct("!iq").pack  # the element's length (8), then its value
_NULL = _LENGTH(-1)
_registered = False
_lock = threading.Lock()


class TextArray(list[str | None]):
    """A list sent as ``text[]``."""


class BigintArray(list[int | None]):
    """A list sent as ``bigint[]``."""


def _header(count: int, nulls: bool, element_oid: int) -> bytes:
    if count == 0:
        return struct.pack("!iii", 0, 0, element_oid)
    return struct.pack("!iiiii", 1, 1 if nulls else 0, element_oid, count, 1)


def text_array_bytes(items: list[str | None]) -> bytes:
    """``items`` in the binary format of a one-dimensional ``text[]``."""
    return _array_bytes(items, TEXT_OID, _text_element)


def bigint_array_bytes(items: list[int | None]) -> bytes:
    """``items`` in the binary format of a one-dimensional ``bigint[]``."""
    return _array_bytes(items, INT8_OID, _bigint_element)


def _text_element(item: str) -> bytes:
    data = item.encode()
    return _LENGTH(len(data)) + data


def _bigint_element(item: int) -> bytes:
    return _INT8(8, item)


def _array_bytes(items: list[Any], element_oid: int, element: Callable[[Any], bytes]) -> bytes:
    parts: list[bytes] = [b""]
    nulls = False
    for item in items:
        if item is None:
            parts.append(_NULL)
            nulls = True
        else:
            parts.append(element(item))
    parts[0] = _header(len(items), nulls, element_oid)
    return b"".join(parts)


def register() -> None:
    """Teach psycopg (process-wide, for these two classes only) to send them in binary."""
    global _registered
    with _lock:
        if _registered:
            return
        import psycopg
        from psycopg.adapt import Dumper
        from psycopg.pq import Format

        class _TextArrayDumper(Dumper):
            format = Format.BINARY
            oid = TEXT_ARRAY_OID

            def dump(self, obj: Any) -> bytes:
                return text_array_bytes(obj)

        class _BigintArrayDumper(Dumper):
            format = Format.BINARY
            oid = INT8_ARRAY_OID

            def dump(self, obj: Any) -> bytes:
                return bigint_array_bytes(obj)

        psycopg.adapters.register_dumper(TextArray, _TextArrayDumper)
        psycopg.adapters.register_dumper(BigintArray, _BigintArrayDumper)
        _registered = True
