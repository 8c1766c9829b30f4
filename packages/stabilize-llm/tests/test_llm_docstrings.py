"""Every public class and function of `stabilize.llm` has a docstring (issue 17)."""

from __future__ import annotations

import inspect

import stabilize.llm as package


def test_every_public_class_and_function_has_a_docstring() -> None:
    missing = []
    for name in package.__all__:
        obj = getattr(package, name)
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
        if not (isinstance(doc, str) and doc.strip()):
            missing.append(name)
    assert missing == []
