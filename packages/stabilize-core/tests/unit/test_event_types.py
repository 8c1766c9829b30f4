"""The event types: one declared list, each with its payload documented."""

from __future__ import annotations

import ast
import inspect

from stabilize.events import TERMINAL_EVENTS, EventType
from stabilize.models import event as event_model


def member_docstrings() -> dict[str, str]:
    """Each EventType member's attribute docstring, read from the source."""
    tree = ast.parse(inspect.getsource(event_model))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EventType")
    docs: dict[str, str] = {}
    for node, after in zip(cls.body, cls.body[1:], strict=False):
        if (
            isinstance(node, ast.Assign)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            target = node.targets[0]
            assert isinstance(target, ast.Name)
            docs[target.id] = after.value.value
    return docs


def test_every_event_type_documents_its_entity_and_payload() -> None:
    docs = member_docstrings()
    assert set(docs) == {m.name for m in EventType}
    for name, doc in docs.items():
        entity = doc.split(".")[0].split(":")[0].split(",")[0]
        assert entity in {"Workflow", "Stage", "Task"}, f"{name}: {doc!r} names no entity"


def test_the_types_the_engine_added_since_the_original_are_declared() -> None:
    for value in (
        "choice.made",
        "signal.queued",
        "stage.buffered",
        "stage.deadline",
        "stage.expanded",
        "workflow.restarted",
        "stage.restarted",
    ):
        assert EventType(value).value == value


def test_terminal_events_are_the_workflow_endings() -> None:
    assert {"workflow.completed", "workflow.failed", "workflow.canceled"} == TERMINAL_EVENTS
    assert all(isinstance(t, EventType) for t in TERMINAL_EVENTS)
    assert "workflow.paused" not in TERMINAL_EVENTS
