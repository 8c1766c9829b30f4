"""Differences between two JSON documents, and applying them (for exact replay).

A diff only holds what changed: ``{"set": {key: new value}, "unset": [key, ...],
"sub": {key: nested diff}, "append": {key: [new items]}, "items": {key: {index: nested
diff}}}`` where ``sub`` is used when both sides of a key are objects, ``append`` when a
list only grew at its end (a conversation, a log), so that growing lists cost their new
items only, and ``items`` when a list kept its length and only some of its objects changed
(a stage's tasks). Applying the diff of ``old`` to ``new`` to a copy of ``old`` gives
``new`` exactly, ``unset`` first: when ``new`` is a live value and ``old`` its JSON, a key
JSON turned into a string (``1`` became ``"1"``) is both removed and set.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from itertools import compress
from operator import ne
from typing import Any

_MISSING: Any = object()


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What changed from ``old`` to ``new`` (empty when nothing did)."""
    removed: list[str] = []
    if len(old) == len(new) and (keys := [*new]) == [*old]:
        # The common case (two versions of one row): the same keys in the same order,
        # compared pairwise in C.
        touched: Iterable[str] = compress(keys, map(ne, old.values(), new.values()))
    else:
        get = old.get
        touched = [key for key, value in new.items() if get(key, _MISSING) != value]
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
                elif len(value) > size and value[:size] == before:
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
    for index in compress(range(len(new)), map(ne, old, new)):
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
