"""Fan-in reducers: how a join combines one output key from several upstream branches.

Set ``output_reducers={"finding": "collect"}`` on a join stage: instead of the last
upstream's ``finding`` winning, its tasks see ``finding`` as the list of every completed
upstream's value, in declaration order of the upstream stages.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Reducer = Callable[[list[Any]], Any]


def _extend(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if isinstance(v, list | tuple):
            out.extend(v)
        else:
            out.append(v)
    return out


def _merge(values: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in values:
        if not isinstance(v, Mapping):
            raise TypeError(f"the merge reducer needs dicts, got {type(v).__name__}")
        out.update(v)
    return out


_BUILTINS: dict[str, Reducer] = {
    "collect": list,
    "append": list,
    "extend": _extend,
    "sum": lambda values: sum(values),
    "max": lambda values: max(values) if values else None,
    "min": lambda values: min(values) if values else None,
    "merge": _merge,
    "first": lambda values: values[0] if values else None,
    "last": lambda values: values[-1] if values else None,
}
_custom: dict[str, Reducer] = {}
_lock = threading.Lock()


def register_reducer(name: str, fn: Reducer) -> None:
    """Register a reducer ``fn(values) -> value``; it overrides a built-in of that name.

    Reducers run inside the engine's transitions: they must be pure and deterministic, and
    every worker process must register the same ones.

    Args:
        name: The name stages use in ``output_reducers``.
        fn: Takes the list of the branches' values (in declaration order) and returns one.

    Raises:
        ValueError: ``name`` is empty or ``fn`` is not callable.
    """
    if not name or not callable(fn):
        raise ValueError("register_reducer(name, fn) needs a name and a callable")
    with _lock:
        _custom[name] = fn


def get_reducer(name: str) -> Reducer:
    """Return the reducer registered as ``name`` (a registered one before a built-in).

    Args:
        name: A built-in reducer's name or one given to :func:`register_reducer`.

    Returns:
        The reducer function.

    Raises:
        ValueError: no reducer has that name; the message lists the known ones.
    """
    fn = _custom.get(name) or _BUILTINS.get(name)
    if fn is None:
        known = ", ".join(sorted({*_BUILTINS, *_custom}))
        raise ValueError(f"unknown reducer {name!r} (known: {known})")
    return fn


def has_reducer(name: str) -> bool:
    """True when a reducer has this name."""
    return name in _custom or name in _BUILTINS


def apply_output_reducers(
    reducers: Mapping[str, str], branch_outputs: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Combine ``branch_outputs`` key by key with the named reducers.

    Only keys present in at least one branch are produced; branches lacking a key are left
    out of that key's values.

    Args:
        reducers: Output key to reducer name, as in ``StageExecution.output_reducers``.
        branch_outputs: The outputs of each branch, in declaration order.

    Returns:
        The combined value of each reduced key that some branch published.

    Raises:
        ValueError: a reducer name is unknown.
    """
    combined: dict[str, Any] = {}
    for key, name in reducers.items():
        fn = get_reducer(name)
        values = [out[key] for out in branch_outputs if key in out]
        if values:
            combined[key] = fn(values)
    return combined
