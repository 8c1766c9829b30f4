"""Differences between two JSON documents, and applying them (for exact replay).

A diff only holds what changed: ``{"set": {key: new value}, "unset": [key, ...],
"sub": {key: nested diff}, "append": {key: [new items]}, "items": {key: {index: nested
diff}}}`` where ``sub`` is used when both sides of a key are objects, ``append`` when a
list only grew at its end (a conversation, a log), so that growing lists cost their new
items only, and ``items`` when a list kept its length and only some of its objects changed
(a stage's tasks). Applying the diff of ``old`` to ``new`` to a copy of ``old`` gives
``new`` exactly, ``unset`` first: when ``new`` is a live value and ``old`` its JSON, a key
JSON turned into a string (``1`` became ``"1"``) is both removed and set. Values are
compared as JSON compares them: ``1``, ``1.0`` and ``True`` (and ``0.0`` and ``-0.0``) are
equal in Python but not in JSON, so a change from one to another is a change. Key order
is not part of a diff: a key whose value did not change keeps its place.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from itertools import compress
from math import copysign
from typing import Any

_MISSING: Any = object()
_NESTED = frozenset({dict, list, tuple, float})
"""The kinds of value in which an equal value may still differ in JSON."""


def _number_kind(value: Any) -> type | None:
    """What JSON writes a number as: ``true``, ``1.0`` or ``1`` (None: not a number)."""
    for kind in (bool, float, int):
        if isinstance(value, kind):
            return kind
    return None


def _retyped(a: Any, b: Any) -> bool:
    """Whether two values that compare equal differ as JSON (``1``, ``1.0``, ``True``)."""
    kind = type(a)
    if kind is not type(b):
        # Equal values of two types: a str and a StrEnum (an int and an IntEnum) are the
        # same JSON; a bool, an int and a float are not.
        if _number_kind(a) is not _number_kind(b):
            return True
        if isinstance(a, dict | list | tuple):
            return _walk(a, b)
        return False
    if kind is float:
        return copysign(1.0, a) != copysign(1.0, b)
    if kind is dict or kind is list or kind is tuple:
        return _walk(a, b)
    return False


def _walk(a: Any, b: Any) -> bool:
    """Whether the items of two equal objects or lists differ as JSON.

    Items of one type that cannot differ (strings, ints, None) are passed over inline:
    only objects, lists and floats cost a call.
    """
    if isinstance(a, dict):
        pairs: Iterable[tuple[Any, Any]] = zip(a.values(), map(b.__getitem__, a), strict=True)
    else:
        pairs = zip(a, b, strict=True)
    for x, y in pairs:
        inner = type(x)
        if inner is type(y):
            if inner in _NESTED and x is not y and _retyped(x, y):
                return True
        elif _retyped(x, y):
            return True
    return False


def _differs(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` differ as JSON values."""
    if a is b:
        return False
    if a != b:
        return True
    kind = type(a)
    return (kind is not type(b) or kind in _NESTED) and _retyped(a, b)


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What changed from ``old`` to ``new`` (empty when nothing did)."""
    removed: list[str] = []
    if len(old) == len(new) and (keys := [*new]) == [*old]:
        # The common case (two versions of one row): the same keys in the same order,
        # compared pairwise.
        touched: Iterable[str] = compress(keys, map(_differs, old.values(), new.values()))
    else:
        get = old.get
        touched = [key for key, value in new.items() if _differs(get(key, _MISSING), value)]
        removed = [key for key in old if key not in new]
    out: dict[str, Any] = {}
    changed: dict[str, Any] | None = None
    nested: dict[str, Any] | None = None
    appended: dict[str, Any] | None = None
    items: dict[str, Any] | None = None
    for key in touched:
        value = new[key]
        before = old.get(key, _MISSING)
        kind = type(value)
        if kind is type(before):
            if kind is dict:
                if nested is None:
                    nested = out["sub"] = {}
                nested[key] = diff(before, value)
                continue
            if kind is list:
                size = len(before)
                if len(value) == size:
                    if (per_item := _item_diffs(before, value)) is not None:
                        if items is None:
                            items = out["items"] = {}
                        items[key] = per_item
                        continue
                elif len(value) > size and not _differs(value[:size], before):
                    if appended is None:
                        appended = out["append"] = {}
                    appended[key] = value[size:]
                    continue
        if changed is None:
            changed = out["set"] = {}
        changed[key] = value
    if removed:
        out["unset"] = removed
    return out


def _item_diffs(old: list[Any], new: list[Any]) -> dict[str, Any] | None:
    """Diffs of the changed objects of two lists of one length (None: not that shape)."""
    out: dict[str, Any] = {}
    for index in compress(range(len(new)), map(_differs, old, new)):
        before, after = old[index], new[index]
        if type(before) is not dict or type(after) is not dict:
            return None
        out[str(index)] = diff(before, after)
    return out


_ATOMIC = frozenset({str, int, float, bool, type(None)})


def _copy(value: Any) -> Any:
    """A private copy of a JSON value (scalars are immutable: shared as they are)."""
    return value if type(value) in _ATOMIC else copy.deepcopy(value)


def apply(document: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``document`` with ``change`` (from :func:`diff`) applied.

    ``document`` is not changed, and the result shares nothing with ``change``.
    """
    out = dict(document)
    # Removals first: a key JSON changed (1 stored as "1") is both removed and set.
    for key in change.get("unset", ()):
        out.pop(key, None)
    if "set" in change:
        for key, value in change["set"].items():
            out[key] = _copy(value)
    if "sub" in change:
        for key, sub in change["sub"].items():
            inner = out.get(key)
            out[key] = apply(inner if isinstance(inner, dict) else {}, sub)
    if "append" in change:
        for key, items in change["append"].items():
            head = out.get(key)
            out[key] = [*(head if isinstance(head, list) else []), *copy.deepcopy(items)]
    if "items" in change:
        for key, per_item in change["items"].items():
            listed = list(out.get(key) or [])
            for index, sub in per_item.items():
                listed[int(index)] = apply(listed[int(index)], sub)
            out[key] = listed
    return out
