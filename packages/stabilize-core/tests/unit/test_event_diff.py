from __future__ import annotations

import json
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
    ({"tasks": [{"s": 1}, {"s": 1}]}, {"tasks": [{"s": 1}, {"s": 2, "e": 3}]}),
    ({"tasks": [{"s": 1}, 2]}, {"tasks": [{"s": 1}, 3]}),
    ({"tasks": [{"s": 1}, {"s": 1}]}, {"tasks": [{"s": 1}, "text"]}),
    ({"tasks": [{"s": 1}]}, {"tasks": [{"s": 1, "x": [1]}]}),
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


def test_a_list_of_objects_of_one_length_records_only_the_changed_fields() -> None:
    running = {"id": "t1", "name": "x" * 200, "status": "RUNNING", "end_time": None}
    done = {**running, "status": "SUCCEEDED", "end_time": 5}
    change = diff({"tasks": [running, running]}, {"tasks": [running, done]})
    assert change == {"items": {"tasks": {"1": {"set": {"status": "SUCCEEDED", "end_time": 5}}}}}
    assert apply({"tasks": [running, running]}, change) == {"tasks": [running, done]}


def test_a_diff_from_stored_json_to_a_live_value_replays_to_the_stored_json() -> None:
    """A live key 1 is stored as "1": the diff removes and sets it; removals apply first."""
    stored = {"outputs": {"1": "a", "n": 1}}
    live: dict[str, Any] = {"outputs": {1: "a", "n": 2, None: True}}
    change = json.loads(json.dumps(diff(stored, live)))
    assert apply(stored, change) == json.loads(json.dumps(live))
