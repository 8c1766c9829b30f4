"""SchemaValidator and friends (stabilize/validation.py): a JSON Schema subset."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stabilize import (
    SchemaValidator,
    StageExecution,
    ValidationError,
    is_valid,
    validate_context,
    validate_outputs,
)

SHELL = {
    "type": "object",
    "required": ["command"],
    "properties": {
        "command": {"type": "string", "minLength": 1},
        "timeout": {"type": "integer", "minimum": 0},
        "env": {"type": "object", "additionalProperties": {"type": "string"}},
        "expected_codes": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
        "shell": {"type": ["boolean", "string"]},
        "mode": {"enum": ["fast", "safe"]},
    },
    "additionalProperties": False,
}


def messages(errors: list[ValidationError]) -> list[str]:
    return [str(e) for e in errors]


def test_valid_context_has_no_errors() -> None:
    ctx = {"command": "ls", "timeout": 5, "env": {"A": "1"}, "expected_codes": [0, 1]}
    assert validate_context(ctx, SHELL) == []
    assert is_valid(ctx, SHELL)
    stage = StageExecution(ref_id="s", name="s", context=ctx, outputs={"n": 1})
    assert validate_context(stage, SHELL) == []
    assert validate_outputs(stage, {"properties": {"n": {"type": "integer"}}}) == []


def test_each_error_names_its_path_and_constraint() -> None:
    ctx = {
        "timeout": -1,
        "env": {"A": 1},
        "expected_codes": [0, "x", 0],
        "shell": 3,
        "mode": "slow",
        "extra": True,
    }
    errors = SchemaValidator(SHELL).validate(ctx)
    assert messages(errors) == [
        "command: is required",
        "timeout: must be >= 0",
        "env.A: must be of type string, not integer",
        "expected_codes: must not repeat items",
        "expected_codes[1]: must be of type integer, not string",
        "shell: must be of type boolean or string, not integer",
        "mode: must be one of ['fast', 'safe']",
        "extra: is not allowed (additionalProperties is false)",
    ]
    assert [e.constraint for e in errors][:2] == ["required", "minimum"]
    assert errors[1].value == -1


@pytest.mark.parametrize(
    ("schema", "value", "ok"),
    [
        ({"type": "integer"}, True, False),  # a bool is not an integer
        ({"type": "number"}, False, False),
        ({"type": "integer"}, 2.0, True),
        ({"const": 1}, True, False),
        ({"enum": [0]}, False, False),
        ({"type": "string", "pattern": "^a+$"}, "aaa", True),
        ({"type": "string", "pattern": "^a+$"}, "ab", False),
        ({"type": "string", "maxLength": 2}, "abc", False),
        ({"multipleOf": 0.1}, 0.3, True),
        ({"exclusiveMaximum": 3}, 3, False),
        ({"anyOf": [{"type": "string"}, {"type": "null"}]}, None, True),
        ({"oneOf": [{"type": "number"}, {"type": "integer"}]}, 1, False),
        ({"not": {"type": "null"}}, None, False),
        ({"allOf": [{"minimum": 1}, {"maximum": 3}]}, 4, False),
        ({"type": "array", "minItems": 1}, [], False),
    ],
)
def test_keywords(schema: dict[str, Any], value: Any, ok: bool) -> None:
    assert is_valid(value, schema) is ok


@pytest.mark.parametrize(
    ("schema", "error"),
    [
        ({"type": "obejct"}, "schema.type: unknown type(s) ['obejct']"),
        ({"minimun": 1}, "schema: unsupported keyword(s) 'minimun'"),
        ({"properties": {"a": {"patern": "x"}}}, "schema.properties.a: unsupported keyword"),
        ({"pattern": "("}, "schema.pattern does not compile"),
        ({"items": []}, "schema.items must be a dict, not list"),
    ],
)
def test_a_schema_with_a_typo_is_refused_naming_where(schema: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(error)):
        SchemaValidator(schema)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


def schema_of(value: Any) -> dict[str, Any]:
    """The tightest schema of ours that ``value`` satisfies."""
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "boolean", "const": value}
    if isinstance(value, int | float):
        return {"type": "number", "minimum": value, "maximum": value}
    if isinstance(value, str):
        return {"type": "string", "minLength": len(value), "maxLength": len(value)}
    if isinstance(value, list):
        return {"type": "array", "minItems": len(value), "maxItems": len(value)}
    return {
        "type": "object",
        "required": sorted(value),
        "properties": {k: schema_of(v) for k, v in value.items()},
        "additionalProperties": False,
    }


@settings(max_examples=200, deadline=None)
@given(json_values)
@example({"a": True})
def test_a_value_satisfies_the_schema_built_from_it(value: Any) -> None:
    assert SchemaValidator(schema_of(value)).validate(value) == []


@settings(max_examples=200, deadline=None)
@given(json_values, json_values)
@example(1, True)
@example({"a": 0}, {"a": False})
def test_errors_are_found_exactly_when_the_value_is_another(value: Any, other: Any) -> None:
    errors = SchemaValidator(schema_of(value)).validate(other)
    assert all(isinstance(e, ValidationError) and e.message for e in errors)
    if _same_json(value, other):
        assert errors == []


def _same_json(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b)
    return bool(type(a) is type(b) and a == b) or (
        isinstance(a, int | float) and isinstance(b, int | float) and a == b
    )
