from __future__ import annotations

from typing import Any

import pytest

from stabilize.events.diff import apply, diff

CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({}, {}),
    ({}, {"a": 1}),
    ({"a": 1}, {}),
    ({"a": 1, "b": [1, 2]}, {"a": 2, "b": [1, 2, 3]}),
    ({"ctx": {"x": 1, "y": {"z": 1}}}, {"ctx": {"x": 1, "y": {"z": 2, "w": None}}}),
    ({"ctx": {"x": 1}}, {"ctx": "replaced by text"}),
    ({"ctx": "text"}, {"ctx": {"x": 1}}),
    ({"status": "RUNNING", "outputs": {}}, {"status": "SUCCEEDED", "outputs": {"k": [1]}}),
    ({"log": [1, 2]}, {"log": [1, 2, 3, 4]}),
    ({"log": [1, 2]}, {"log": [2, 3]}),
    ({"log": [1, 2]}, {"log": [1]}),
    (
        {"ctx": {"_agent": {"messages": [{"r": "u"}]}}},
        {"ctx": {"_agent": {"messages": [{"r": "u"}, {"r": "a"}]}}},
    ),
]


@pytest.mark.parametrize(("old", "new"), CASES)
def test_apply_of_diff_rebuilds_the_new_document(old: dict[str, Any], new: dict[str, Any]) -> None:
    assert apply(old, diff(old, new)) == new


def test_diff_holds_only_what_changed() -> None:
    old = {"context": {"big": "x" * 1000, "n": 1}, "status": "RUNNING"}
    new = {"context": {"big": "x" * 1000, "n": 2}, "status": "RUNNING"}
    assert diff(old, new) == {"sub": {"context": {"set": {"n": 2}}}}
    assert diff(new, new) == {}


def test_apply_does_not_share_state_with_the_change() -> None:
    change = {"set": {"items": [1, 2]}}
    rebuilt = apply({}, change)
    rebuilt["items"].append(3)
    assert change == {"set": {"items": [1, 2]}}


def test_a_growing_list_records_only_its_new_items() -> None:
    old = {"messages": [{"role": "user", "content": "x" * 500}]}
    new = {"messages": [*old["messages"], {"role": "assistant", "content": "hi"}]}
    assert diff(old, new) == {"append": {"messages": [{"role": "assistant", "content": "hi"}]}}
