"""Differences between two JSON documents, and applying them (for exact replay).

A diff only holds what changed: ``{"set": {key: new value}, "unset": [key, ...],
"sub": {key: nested diff}, "append": {key: [new items]}, "items": {key: {index: nested
diff}}}`` where ``sub`` is used when both sides of a key are objects, ``append`` when a
list only grew at its end (a conversation, a log), so that growing lists cost their new
items only, and ``items`` when a list kept its length and only some of its objects changed
(a stage's tasks). Applying the diff of
``old`` to ``new`` to a copy of ``old`` gives ``new`` exactly.
"""

from __future__ import annotations

import copy
from typing import Any

_MISSING: Any = object()


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What changed from ``old`` to ``new`` (empty when nothing did)."""
    get = old.get
    touched = [key for key, value in new.items() if get(key, _MISSING) != value]
    out: dict[str, Any] = {}
    if touched:
        changed: dict[str, Any] = {}
        nested: dict[str, Any] = {}
        appended: dict[str, Any] = {}
        items: dict[str, Any] = {}
        for key in touched:
            value = new[key]
            before = get(key, _MISSING)
            if isinstance(before, dict) and isinstance(value, dict):
                nested[key] = diff(before, value)
            elif isinstance(before, list) and isinstance(value, list):
                if len(value) > len(before) and value[: len(before)] == before:
                    appended[key] = value[len(before) :]
                elif (per_item := _item_diffs(before, value)) is not None:
                    items[key] = per_item
                else:
                    changed[key] = value
            else:
                changed[key] = value
        if changed:
            out["set"] = changed
        if nested:
            out["sub"] = nested
        if appended:
            out["append"] = appended
        if items:
            out["items"] = items
    if old.keys() != new.keys() and (removed := [key for key in old if key not in new]):
        out["unset"] = removed
    return out


def _item_diffs(old: list[Any], new: list[Any]) -> dict[str, Any] | None:
    """Diffs of the changed objects of two lists of one length (None: not that shape)."""
    if len(old) != len(new):
        return None
    out: dict[str, Any] = {}
    for index, (before, after) in enumerate(zip(old, new, strict=True)):
        if before == after:
            continue
        if not (isinstance(before, dict) and isinstance(after, dict)):
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
    for key in change.get("unset", ()):
        out.pop(key, None)
    return out
