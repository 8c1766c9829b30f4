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
from itertools import compress
from operator import ne, not_
from typing import Any

from pydantic_core import PydanticSerializationError, to_json

from stabilize._json import ENCODING_ERRORS, dumps

_MISSING: Any = object()


def _json_differs(a: Any, b: Any) -> bool:
    """Whether two values Python finds equal differ as JSON (``1``, ``1.0``, ``True``).

    Their JSON texts tell, encoded in C: much cheaper than walking them in Python.
    """
    try:
        return bool(to_json(a) != to_json(b))
    except PydanticSerializationError:
        pass  # nested deeper than the fast encoder goes, or not JSON at all
    try:
        return dumps(a) != dumps(b)
    except ENCODING_ERRORS:  # a live value the row's encoder refuses: it is no baseline
        return True


class _Equal:
    """Values Python found equal while diffing one row, to be checked as JSON at the end."""

    __slots__ = ("after", "before")

    def __init__(self) -> None:
        self.before: list[Any] = []
        self.after: list[Any] = []


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What changed from ``old`` to ``new`` (empty when nothing did).

    Values are compared in C with ``==``; the values found equal are then checked as
    JSON all at once (a change between ``1``, ``1.0`` and ``True`` hides from ``==``).
    Only a row where that check fails is diffed again, value by value as JSON.
    """
    equal = _Equal()
    out = _diff(old, new, equal)
    if equal.before and _json_differs(equal.before, equal.after):
        out = _diff(old, new, None)
    return out


def _touched(keys: list[Any], old: list[Any], new: list[Any], equal: _Equal | None) -> list[Any]:
    """The ``keys`` whose values (``old``, ``new``, in key order) differ.

    With ``equal``, as Python compares them (the equal ones are kept there for the
    check as JSON); without, as JSON compares them.
    """
    flags = list(map(ne, old, new))
    same = list(map(not_, flags))
    if any(same):
        if equal is not None:
            equal.before.append([*compress(old, same)])
            equal.after.append([*compress(new, same)])
        elif _json_differs([*compress(old, same)], [*compress(new, same)]):
            flags = [
                flag or _json_differs(before, after)
                for flag, before, after in zip(flags, old, new, strict=True)
            ]
    return [*compress(keys, flags)]


def _diff(old: dict[str, Any], new: dict[str, Any], equal: _Equal | None) -> dict[str, Any]:
    removed: list[str] = []
    keys = [*new]
    if len(old) == len(new) and keys == [*old]:
        # The common case (two versions of one row): the same keys in the same order.
        touched = _touched(keys, [*old.values()], [*new.values()], equal)
    else:
        present = [key for key in keys if key in old]
        touched = _touched(present, [old[k] for k in present], [new[k] for k in present], equal)
        if len(present) < len(keys):
            fresh = {key for key in keys if key not in old}
            kept = set(touched)
            touched = [key for key in keys if key in fresh or key in kept]
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
                nested[key] = _diff(before, value, equal)
                continue
            if kind is list:
                size = len(before)
                if len(value) == size:
                    if (per_item := _item_diffs(before, value, equal)) is not None:
                        if items is None:
                            items = out["items"] = {}
                        items[key] = per_item
                        continue
                elif len(value) > size and (head := value[:size]) == before:
                    if equal is not None:
                        equal.before.append(before)
                        equal.after.append(head)
                    if equal is not None or not _json_differs(head, before):
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


def _item_diffs(old: list[Any], new: list[Any], equal: _Equal | None) -> dict[str, Any] | None:
    """Diffs of the changed objects of two lists of one length (None: not that shape)."""
    out: dict[str, Any] = {}
    for index in _touched(list(range(len(new))), old, new, equal):
        before, after = old[index], new[index]
        if type(before) is not dict or type(after) is not dict:
            return None
        out[str(index)] = _diff(before, after, equal)
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
