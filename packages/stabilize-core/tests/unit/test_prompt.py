"""``stabilize prompt``'s generator: complete, bounded, the same on every run (issue 17)."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
from datetime import timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import stabilize
from stabilize._prompt import MAX_CHARS, render
from stabilize._prompt._api import describe, format_default, public_names, signature


def test_the_reference_fits_and_is_the_same_twice() -> None:
    first = render()

    assert len(first) <= MAX_CHARS
    assert render() == first
    assert first.endswith("\n")


def test_every_public_name_of_every_installed_package_is_named() -> None:
    text = render()

    for module, names in public_names().items():
        assert f"### `{module}`" in text
        for name in names:
            assert f"`{name}" in text, (module, name)


def test_core_names_are_exactly_stabilize_all_plus_the_lazy_ones() -> None:
    from stabilize._plugins import export_names

    assert public_names()["stabilize"] == sorted({*stabilize.__all__, *export_names()})


def test_no_memory_address_path_or_time_in_the_reference() -> None:
    text = render()

    assert not re.search(r"0x[0-9a-f]{6,}", text)
    assert "/work/" not in text
    assert "site-packages" not in text
    assert not re.search(r"\b20\d\d-\d\d-\d\d", text)


def test_every_generated_marker_was_filled() -> None:
    assert "<!-- generated:" not in render()


class _Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class _Config:
    items: list[int] = dataclasses.field(default_factory=list)
    delay: timedelta = timedelta(seconds=1)
    color: _Color = _Color.RED


def test_defaults_are_written_without_addresses() -> None:
    def f(a: int, *, cb: object = print, thing: object = object(), tags: object = None) -> None:
        pass

    assert signature(f) == "(a, *, cb=builtins.print, thing=<object>, tags=None)"
    assert signature(_Config) == (
        "(items=..., delay=datetime.timedelta(seconds=1), color=_Color.RED)"
    )


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.text(max_size=8), max_size=8))
@example(values=["workflow.failed", "workflow.canceled", "workflow.completed"])
def test_a_set_default_reads_the_same_whatever_its_order(values: list[str]) -> None:
    assert format_default(frozenset(values)) == format_default(frozenset(reversed(values)))
    assert format_default(set(values)) == format_default(set(sorted(values)))


def test_describe_an_enum_lists_its_members() -> None:
    assert describe("_Color", _Color).startswith("- `_Color` (enum: RED)")


def test_every_core_public_class_and_function_has_a_docstring() -> None:
    missing = []
    for name in stabilize.__all__:
        obj = getattr(stabilize, name)
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
        if not (isinstance(doc, str) and doc.strip()):
            missing.append(name)
    assert missing == []


def test_without_the_extensions_their_sections_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stabilize._prompt import _api

    monkeypatch.setattr(_api, "installed", lambda module: False)

    text = render()

    assert "Not installed: stabilize-llm, stabilize-hitl, stabilize-stream." in text
    assert "install `stabilize-llm`" in text
    assert "install `stabilize-stream`" in text
    assert "install\n`stabilize-hitl`" in text or "install `stabilize-hitl`" in text
    assert "### `stabilize.llm`" not in text
    assert "from stabilize.llm" not in text
    assert "from stabilize.hitl" not in text
    assert "from stabilize.streaming" not in text
    assert len(text) <= MAX_CHARS
