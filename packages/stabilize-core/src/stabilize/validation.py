"""Checking a stage's context or outputs against a schema (a subset of JSON Schema).

No dependency: the keywords tasks need to check their inputs are implemented here.

- ``type``: ``string``, ``integer``, ``number``, ``boolean``, ``array``, ``object``,
  ``null``, or a list of them (a bool is never an integer or a number);
- ``enum``, ``const``;
- ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``, ``multipleOf``;
- ``minLength``, ``maxLength``, ``pattern`` (``re.search``);
- ``items``, ``minItems``, ``maxItems``, ``uniqueItems``;
- ``properties``, ``required``, ``additionalProperties`` (a bool or a schema);
- ``anyOf``, ``oneOf``, ``allOf``, ``not``.

Any other keyword is refused when the validator is built (a typo must not pass as "no
constraint"), with the path of the schema that holds it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_TYPES = frozenset({"string", "integer", "number", "boolean", "array", "object", "null"})
_KEYWORDS = frozenset(
    {
        "type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "multipleOf", "minLength", "maxLength", "pattern", "items", "minItems", "maxItems",
        "uniqueItems", "properties", "required", "additionalProperties", "anyOf", "oneOf",
        "allOf", "not",
        # annotations, accepted and ignored
        "$schema", "$id", "title", "description", "default", "examples", "$comment",
    }
)  # fmt: skip


@dataclass
class ValidationError:
    """One way the data breaks the schema.

    Attributes:
        path: Where in the data (``timeout``, ``servers[0].host``; ``""`` for the top).
        message: What is wrong.
        value: The offending value.
        constraint: The schema keyword it breaks.
    """

    path: str
    message: str
    value: Any = None
    constraint: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SchemaValidator:
    """Validates data against a schema (see the module docstring for the keywords).

    Args:
        schema: The schema, a dict.

    Raises:
        ValueError: the schema is not one (an unknown keyword, a bad ``type``, a pattern
            that does not compile), naming where.
    """

    def __init__(self, schema: Mapping[str, Any]) -> None:
        _check_schema(schema, "schema")
        self.schema = schema

    def validate(self, data: Any) -> list[ValidationError]:
        """Every way ``data`` breaks the schema (empty when it is valid).

        Args:
            data: Any JSON-like value (dicts, lists, strings, numbers, booleans, None).

        Returns:
            One `ValidationError` per violation, each naming its path; empty when valid.
        """
        errors: list[ValidationError] = []
        _validate(data, self.schema, "", errors)
        return errors

    def is_valid(self, data: Any) -> bool:
        """True when ``data`` satisfies the schema.

        Args:
            data: Any JSON-like value.

        Returns:
            Whether `validate` finds nothing wrong.
        """
        return not self.validate(data)


def validate_context(context: Any, schema: Mapping[str, Any]) -> list[ValidationError]:
    """Validate a stage's context (a :class:`StageExecution` or the dict itself).

    Args:
        context: A stage (its ``context`` is checked) or the mapping to check.
        schema: The schema (see the module docstring for the keywords).

    Returns:
        Every violation found; empty when the context is valid.

    Raises:
        ValueError: ``schema`` is not a valid schema, naming where.
    """
    return SchemaValidator(schema).validate(_mapping_of(context, "context"))


def validate_outputs(outputs: Any, schema: Mapping[str, Any]) -> list[ValidationError]:
    """Validate a stage's outputs (a :class:`StageExecution` or the dict itself).

    Args:
        outputs: A stage (its ``outputs`` are checked) or the mapping to check.
        schema: The schema (see the module docstring for the keywords).

    Returns:
        Every violation found; empty when the outputs are valid.

    Raises:
        ValueError: ``schema`` is not a valid schema, naming where.
    """
    return SchemaValidator(schema).validate(_mapping_of(outputs, "outputs"))


def is_valid(data: Any, schema: Mapping[str, Any]) -> bool:
    """True when ``data`` satisfies ``schema``.

    Args:
        data: Any JSON-like value.
        schema: The schema (see the module docstring for the keywords).

    Returns:
        Whether ``data`` breaks none of the schema's constraints.

    Raises:
        ValueError: ``schema`` is not a valid schema, naming where.
    """
    return SchemaValidator(schema).is_valid(data)


def _mapping_of(value: Any, attribute: str) -> Any:
    if isinstance(value, Mapping):
        return value
    return getattr(value, attribute, value)


def _check_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, Mapping):
        raise ValueError(f"{where} must be a dict, not {type(schema).__name__}")
    unknown = sorted(set(schema) - _KEYWORDS)
    if unknown:
        raise ValueError(f"{where}: unsupported keyword(s) {', '.join(map(repr, unknown))}")
    kinds = schema.get("type")
    if kinds is not None:
        names = kinds if isinstance(kinds, list) else [kinds]
        bad = [k for k in names if k not in _TYPES]
        if bad:
            raise ValueError(f"{where}.type: unknown type(s) {bad!r}")
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except (re.error, TypeError) as exc:
            raise ValueError(f"{where}.pattern does not compile: {exc}") from exc
    for key in ("items", "not"):
        if key in schema:
            _check_schema(schema[key], f"{where}.{key}")
    if isinstance(schema.get("additionalProperties"), Mapping):
        _check_schema(schema["additionalProperties"], f"{where}.additionalProperties")
    for name, sub in (schema.get("properties") or {}).items():
        _check_schema(sub, f"{where}.properties.{name}")
    for key in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(schema.get(key) or []):
            _check_schema(sub, f"{where}.{key}[{i}]")


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(
        value,
        {
            "string": str,
            "boolean": bool,
            "array": list | tuple,
            "object": Mapping,
            "null": type(None),
        }[kind],
    )


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _validate(value: Any, schema: Mapping[str, Any], path: str, out: list[ValidationError]) -> None:
    def fail(message: str, constraint: str) -> None:
        out.append(ValidationError(path, message, value, constraint))

    kinds = schema.get("type")
    if kinds is not None:
        names = kinds if isinstance(kinds, list) else [kinds]
        if not any(_is_type(value, k) for k in names):
            fail(f"must be of type {' or '.join(names)}, not {_json_type(value)}", "type")
            return  # the other keywords would only repeat it
    if "enum" in schema and not any(_same(value, v) for v in schema["enum"]):
        fail(f"must be one of {schema['enum']!r}", "enum")
    if "const" in schema and not _same(value, schema["const"]):
        fail(f"must be {schema['const']!r}", "const")
    if isinstance(value, int | float) and not isinstance(value, bool):
        _numbers(value, schema, fail)
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            fail(f"must have at least {schema['minLength']} characters", "minLength")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            fail(f"must have at most {schema['maxLength']} characters", "maxLength")
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            fail(f"must match the pattern {schema['pattern']!r}", "pattern")
    if isinstance(value, list | tuple):
        _arrays(value, schema, path, out, fail)
    if isinstance(value, Mapping):
        _objects(value, schema, path, out, fail)
    _combinations(value, schema, path, out, fail)


def _numbers(value: float, schema: Mapping[str, Any], fail: Any) -> None:
    if "minimum" in schema and value < schema["minimum"]:
        fail(f"must be >= {schema['minimum']}", "minimum")
    if "maximum" in schema and value > schema["maximum"]:
        fail(f"must be <= {schema['maximum']}", "maximum")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        fail(f"must be > {schema['exclusiveMinimum']}", "exclusiveMinimum")
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        fail(f"must be < {schema['exclusiveMaximum']}", "exclusiveMaximum")
    step = schema.get("multipleOf")
    if step and not math.isclose(value / step, round(value / step), abs_tol=1e-9):
        fail(f"must be a multiple of {step}", "multipleOf")


def _arrays(
    value: Any, schema: Mapping[str, Any], path: str, out: list[ValidationError], fail: Any
) -> None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        fail(f"must have at least {schema['minItems']} items", "minItems")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        fail(f"must have at most {schema['maxItems']} items", "maxItems")
    if schema.get("uniqueItems"):
        seen = [_canonical(v) for v in value]
        if len(set(seen)) != len(seen):
            fail("must not repeat items", "uniqueItems")
    if "items" in schema:
        for i, item in enumerate(value):
            _validate(item, schema["items"], _join(path, i), out)


def _objects(
    value: Mapping[str, Any],
    schema: Mapping[str, Any],
    path: str,
    out: list[ValidationError],
    fail: Any,
) -> None:
    for key in schema.get("required") or []:
        if key not in value:
            out.append(ValidationError(_join(path, key), "is required", None, "required"))
    properties = schema.get("properties") or {}
    for key, sub in properties.items():
        if key in value:
            _validate(value[key], sub, _join(path, key), out)
    extra = schema.get("additionalProperties", True)
    for key in value:
        if key in properties:
            continue
        if extra is False:
            out.append(
                ValidationError(
                    _join(path, str(key)),
                    "is not allowed (additionalProperties is false)",
                    value[key],
                    "additionalProperties",
                )
            )
        elif isinstance(extra, Mapping):
            _validate(value[key], extra, _join(path, str(key)), out)


def _combinations(
    value: Any, schema: Mapping[str, Any], path: str, out: list[ValidationError], fail: Any
) -> None:
    def passes(sub: Mapping[str, Any]) -> bool:
        found: list[ValidationError] = []
        _validate(value, sub, path, found)
        return not found

    if "allOf" in schema:
        for sub in schema["allOf"]:
            _validate(value, sub, path, out)
    if "anyOf" in schema and not any(passes(s) for s in schema["anyOf"]):
        fail("must match at least one schema of anyOf", "anyOf")
    if "oneOf" in schema:
        matched = sum(1 for s in schema["oneOf"] if passes(s))
        if matched != 1:
            fail(f"must match exactly one schema of oneOf (matched {matched})", "oneOf")
    if "not" in schema and passes(schema["not"]):
        fail("must not match the schema of not", "not")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def _json_type(value: Any) -> str:
    for kind in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is_type(value, kind):
            return kind
    return type(value).__name__
