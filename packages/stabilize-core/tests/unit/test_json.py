"""The engine's JSON encoders: the fast one for its own events gives what the strict one does."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from stabilize._json import dumps, dumps_known, loads
from stabilize.backends._base import event_row
from stabilize.engine.messages import EventDraft

VALUES: list[Any] = [
    {},
    [],
    {"a": 1, "b": [1, 2.5, None, True, False], "c": {"d": "é\u2028\x00\x1f\x7f"}},
    {1: "int key", 2.5: "float key"},
    {False: "bool key"},
    {"big": 10**30, "small": 1e-07, "neg": -0.0, "huge": 1e300},
    (1, (2, 3)),
    {'x"None': 1},
    {None: 1, "n": {None: [1]}},
    "plain",
]


@pytest.mark.parametrize("value", VALUES)
def test_the_fast_encoder_reads_back_as_the_strict_one(value: Any) -> None:
    assert loads(dumps_known(value)) == loads(dumps(value))


@pytest.mark.parametrize("value", [{None: 1}, {"n": {None: [1]}}, "\ud800"])
def test_what_the_fast_encoder_writes_differently_goes_through_the_strict_one(value: Any) -> None:
    assert dumps_known(value) == dumps(value)


def test_progress_data_from_a_task_is_still_checked_strictly() -> None:
    when = datetime.datetime(2026, 1, 1)
    progress = EventDraft("custom.progress", "stage", "s", {"at": when})
    with pytest.raises(TypeError):
        progress.json()
    with pytest.raises(TypeError):
        event_row("wf", 1, [EventDraft("stage.started", "stage", "s", {}), progress], 0)
    # The engine's own events hold values of rows already checked; a None key keeps the
    # strict encoder's spelling.
    own = EventDraft("state.changed", "workflow", "wf", {"set": {None: 1}})
    assert own.json() == '{"set":{"null":1}}'
