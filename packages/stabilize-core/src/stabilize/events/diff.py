"""Differences between two JSON documents, and applying them (for exact replay).

A diff only holds what changed: ``{"set": {key: new value}, "unset": [key, ...],
"sub": {key: nested diff}}`` where both sides of a key are objects. Applying the diff of
``old`` to ``new`` to a copy of ``old`` gives ``new`` exactly.
"""

from __future__ import annotations

import copy
from typing import Any


def diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What changed from ``old`` to ``new`` (empty when nothing did)."""
    changed: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    for key, value in new.items():
        if key not in old:
            changed[key] = value
            continue
        before = old[key]
        if before == value:
            continue
        if isinstance(before, dict) and isinstance(value, dict):
            nested[key] = diff(before, value)
        else:
            changed[key] = value
    removed = [key for key in old if key not in new]
    out: dict[str, Any] = {}
    if changed:
        out["set"] = changed
    if removed:
        out["unset"] = removed
    if nested:
        out["sub"] = nested
    return out


def apply(document: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``document`` with ``change`` (from :func:`diff`) applied."""
    out = dict(document)
    for key in change.get("unset", ()):
        out.pop(key, None)
    for key, value in change.get("set", {}).items():
        out[key] = copy.deepcopy(value)
    for key, sub in change.get("sub", {}).items():
        inner = out.get(key)
        out[key] = apply(inner if isinstance(inner, dict) else {}, sub)
    return out
