"""The engine's JSON encoding: compact, keys in insertion order, no NaN."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic_core import PydanticSerializationError, from_json, to_json

_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
)


def _c_encoder() -> Callable[[Any, int], list[str]] | None:
    """The C encoder that ``_ENCODER.encode`` builds at every call, built once.

    ``JSONEncoder.encode`` makes a new one per value (a third of the time of encoding a
    row); this one has the same settings, so the text is the same. None where the
    interpreter has no C encoder (or one that takes other arguments).
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        encoder: Callable[[Any, int], list[str]] = make(
            None,  # no cycle bookkeeping: check_circular=False
            _ENCODER.default,
            json.encoder.encode_basestring,  # ensure_ascii=False
            None,  # no indent
            ":",
            ",",
            False,  # sort_keys
            False,  # skipkeys
            False,  # allow_nan
        )
    except TypeError:
        return None
    return encoder


_C_ENCODE = _c_encoder()

ENCODING_ERRORS = (TypeError, ValueError)
"""What :func:`dumps` raises for a value that is not JSON."""


def dumps(value: Any) -> str:
    """Encode a JSON column or event.

    One shared encoder, without the encoder's cycle bookkeeping (stored values are data):
    a value that contains itself is still refused, with ``ValueError``.

    Raises:
        TypeError: a value of a type JSON does not have.
        ValueError: NaN or infinity, a string with a lone surrogate (not valid UTF-8), or
            a value that contains itself (or nests deeper than the interpreter's
            recursion limit).
    """
    try:
        text = "".join(_C_ENCODE(value, 0)) if _C_ENCODE is not None else _ENCODER.encode(value)
    except RecursionError:
        raise ValueError(
            "the value contains itself (a cycle) or is nested too deeply to encode"
        ) from None
    if not text.isascii():
        _check_utf8(text)
    return text


def _check_utf8(text: str) -> None:
    # A lone surrogate (os.listdir() of a non-UTF-8 file name, say) encodes as JSON but
    # not as UTF-8: the database driver would refuse the whole transaction later (#13).
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        raise ValueError(
            f"a string holds {bad!r}, a lone surrogate that is not valid Unicode text "
            "(often a file name or bytes decoded with errors='surrogateescape'; decode "
            "them with errors='replace' or keep them as base64)"
        ) from None


def describe_unencodable(value: Any, where: str) -> str | None:
    """Say which part of ``value`` :func:`dumps` refuses, and why; None if it encodes.

    The message names the path to the first bad key or value (``outputs['files'][2]``),
    so that an error points at what a task returned rather than at a position in text.
    """
    try:
        dumps(value)
    except ENCODING_ERRORS as exc:
        return _locate(value, where, exc, depth=0)
    return None


_MAX_PATH = 10
"""How many keys deep a path is followed (a cycle would give an endless one)."""


def _locate(value: Any, path: str, exc: Exception, depth: int) -> str:
    if depth < _MAX_PATH and isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool) and key is not None:
                return f"{path}: the key {key!r} is a {type(key).__name__}, not a string"
            if isinstance(key, str) and not key.isascii():
                try:
                    _check_utf8(key)
                except ValueError as key_exc:
                    return f"{path}: the key {key!r}: {key_exc}"
            try:
                dumps(item)
            except ENCODING_ERRORS as inner:
                return _locate(item, f"{path}[{key!r}]", inner, depth + 1)
    elif depth < _MAX_PATH and isinstance(value, list | tuple):
        for index, item in enumerate(value):
            try:
                dumps(item)
            except ENCODING_ERRORS as inner:
                return _locate(item, f"{path}[{index}]", inner, depth + 1)
    if isinstance(exc, TypeError) and not isinstance(value, dict | list | tuple):
        return f"{path} holds a value of type {type(value).__name__}, which JSON cannot store"
    return f"{path} cannot be stored as JSON: {exc}"


def safe_text(text: str) -> str:
    """``text`` with lone surrogates written as escapes, so that it can always be stored.

    For text the engine records about user code (error messages, tracebacks), which must
    be stored even when the code's own data was not valid Unicode.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def dumps_known(value: Any) -> str:
    """Encode a value whose parts already went through :func:`dumps`, about 3x faster.

    For the engine's own events, which hold values of rows encoded in the same
    transaction (diffs of them, ids, statuses): those are JSON, so the faster encoder
    gives the same text (a ``None`` key, which it would write as ``"None"`` where
    :func:`dumps` writes ``"null"``, and anything it cannot encode, go through
    :func:`dumps`). Values a user hands to the engine directly (progress updates) must
    go through :func:`dumps`, which refuses what JSON does not have.
    """
    try:
        text = to_json(value).decode()
    except PydanticSerializationError:
        return dumps(value)
    # Only a key can be followed by a colon: '"None":' is a key None (or a string key
    # ending that way, also sent to dumps, which gives the same text for it).
    return dumps(value) if '"None":' in text else text


def loads(text: str | bytes) -> Any:
    """Decode JSON text (the engine's rows and events), about twice as fast as ``json.loads``."""
    try:
        return from_json(text)
    except ValueError:  # nested deeper than the fast parser goes (about 200 levels)
        return json.loads(text)
