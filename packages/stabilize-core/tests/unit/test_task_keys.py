"""The built-in tasks' declared context keys and outputs match what their code reads (issue 17).

``stabilize prompt`` lists them from ``stabilize.tasks._declared``; these tests keep that
table honest in both directions: every declared key occurs in its task's modules, and every
key a task reads through its ``ContextReader`` is declared.
"""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

from stabilize.tasks import TaskRegistry
from stabilize.tasks._declared import BUILTIN_TASK_KEYS, TaskKeys
from stabilize.tasks.registry import _builtins

READER_CALL = re.compile(
    r"\b(?:r|reader)\.(?:text|flag|number|text_list|text_map|choice|raw|has)\(\s*\"(\w+)\""
)


def source(keys: TaskKeys) -> str:
    return "\n".join(inspect.getsource(importlib.import_module(m)) for m in keys.modules)


@pytest.mark.parametrize("keys", BUILTIN_TASK_KEYS, ids=[k.task for k in BUILTIN_TASK_KEYS])
def test_every_declared_key_and_output_occurs_in_the_task_code(keys: TaskKeys) -> None:
    code = source(keys)

    for key in keys.context:
        assert f'"{key.name}"' in code, (keys.task, key.name)
    for output in keys.outputs:
        assert f'"{output}"' in code, (keys.task, output)


@pytest.mark.parametrize("keys", BUILTIN_TASK_KEYS, ids=[k.task for k in BUILTIN_TASK_KEYS])
def test_every_key_the_task_reads_is_declared(keys: TaskKeys) -> None:
    own = inspect.getsource(importlib.import_module(keys.modules[0]))

    read = set(READER_CALL.findall(own))

    assert read <= {k.name for k in keys.context}, keys.task


@pytest.mark.parametrize("keys", BUILTIN_TASK_KEYS, ids=[k.task for k in BUILTIN_TASK_KEYS])
def test_the_declared_class_is_the_registered_one(keys: TaskKeys) -> None:
    module, _, name = keys.cls.partition(":")

    registered = TaskRegistry().get(keys.task)

    assert type(registered) is getattr(importlib.import_module(module), name)


def test_every_builtin_task_type_but_loop_is_declared() -> None:
    declared = {k.task for k in BUILTIN_TASK_KEYS}

    # SubWorkflowTask: the class name, also accepted for the sub_workflow type (spec).
    assert declared == set(_builtins()) - {"loop", "SubWorkflowTask"}
    assert len(declared) == len(BUILTIN_TASK_KEYS)
