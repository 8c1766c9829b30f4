"""The engine's JSON encoding: compact, keys in insertion order, no NaN."""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import from_json

_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
)

ENCODING_ERRORS = (TypeError, ValueError)
"""What :func:`dumps` raises for a value that is not JSON."""


def dumps(value: Any) -> str:
    """Encode a JSON column or event.

    One shared encoder, without the encoder's cycle bookkeeping (stored values are data):
    a value that contains itself is still refused, with ``ValueError``.

    Raises:
        TypeError: a value of a type JSON does not have.
        ValueError: NaN or infinity, or a value that contains itself (or nests deeper
            than the interpreter's recursion limit).
    """
    try:
        return _ENCODER.encode(value)
    except RecursionError:
        raise ValueError(
            "the value contains itself (a cycle) or is nested too deeply to encode"
        ) from None


def loads(text: str | bytes) -> Any:
    """Decode JSON text (the engine's rows and events), about twice as fast as ``json.loads``."""
    try:
        return from_json(text)
    except ValueError:  # nested deeper than the fast parser goes (about 200 levels)
        return json.loads(text)
