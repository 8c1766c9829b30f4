"""The safe expression evaluator (stabilize/expressions.py): what it allows, what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from stabilize.expressions import ExpressionError, compile_expression, evaluate, is_true

CTX: dict[str, Any] = {
    "score": 0.9,
    "n": 7,
    "region": "eu",
    "items": [1, 2, 3],
    "result": {"status": "ok", "codes": [200, 201]},
    "approved": False,
    "name": "build",
    "empty": [],
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # literals
        ("1", 1),
        ("'text'", "text"),
        ("2.5", 2.5),
        ("[1, 2]", [1, 2]),
        ("{'a': 1, 'b': n}", {"a": 1, "b": 7}),
        ("true", True),
        ("false", False),
        ("null", None),
        ("True", True),
        ("None", None),
        # names from the context
        ("score", 0.9),
        ("result", {"status": "ok", "codes": [200, 201]}),
        # boolean operators (Python semantics: the deciding operand)
        ("approved or n", 7),
        ("approved and n", False),
        ("not approved", True),
        ("score >= 0.8 and region in ['eu', 'us']", True),
        # comparisons, chained, in / not in
        ("n == 7", True),
        ("n != 7", False),
        ("1 < n < 10", True),
        ("1 < n < 5", False),
        ("0 <= score <= 1", True),
        ("3 in items", True),
        ("4 not in items", True),
        ("'o' in name", False),
        ("region == 'eu'", True),
        # arithmetic
        ("n + 1", 8),
        ("n - 10", -3),
        ("n * 2", 14),
        ("n / 2", 3.5),
        ("n // 2", 3),
        ("n % 4", 3),
        ("-n", -7),
        ("+n", 7),
        ("'a' + name", "abuild"),
        # subscripts
        ("items[0]", 1),
        ("items[-1]", 3),
        ("result['status'] == 'ok'", True),
        ("result['codes'][1]", 201),
        # conditional expressions
        ("'big' if n > 5 else 'small'", "big"),
        ("'big' if n > 50 else 'small'", "small"),
        # the allowed calls
        ("len(items)", 3),
        ("len(items) > 2", True),
        ("abs(-3)", 3),
        ("min(items)", 1),
        ("max(n, 3)", 7),
        ("int('42')", 42),
        ("float('1.5')", 1.5),
        ("str(n)", "7"),
        ("bool(empty)", False),
        ("round(score)", 1),
        ("round(2.567, 2)", 2.57),
    ],
)
def test_allowed_expressions_evaluate_like_python(source: str, expected: Any) -> None:
    assert evaluate(source, CTX) == expected


def test_context_names_win_over_the_constant_names() -> None:
    assert evaluate("null", {"null": "mine"}) == "mine"
    assert evaluate("true", {}) is True


def test_boolean_operators_short_circuit_before_unknown_names() -> None:
    assert evaluate("approved and missing", CTX) is False
    assert evaluate("n or missing", CTX) == 7
    assert evaluate("n if true else missing", CTX) == 7


@pytest.mark.parametrize(
    "source",
    [
        "().__class__",  # dunder tricks are attribute access
        "().__class__.__bases__[0].__subclasses__()",
        "name.upper()",
        "result.status",
        "items.__len__()",
        "lambda: 1",
        "[x for x in items]",
        "{x for x in items}",
        "{k: 1 for k in items}",
        "sum(x for x in items)",
        "open('/etc/passwd')",
        "__import__('os')",
        "eval('1')",
        "exec('1')",
        "getattr(items, 'append')",
        "type(items)",
        "sorted(items)",
        "max(items, key=abs)",
        "round(number=2.5)",
        "(items)(1)",
        "items[0](1)",
        "2 ** 100",
        "n | 1",
        "(y := 3)",
        "f'{n}'",
        "await n",
        "yield n",
    ],
)
def test_refused_expressions_fail_at_parse(source: str) -> None:
    with pytest.raises(ExpressionError):
        compile_expression(source)
    with pytest.raises(ExpressionError):
        evaluate(source, CTX)


@pytest.mark.parametrize("source", ["n +", "(", "1 2", "", "import os", "x = 1"])
def test_syntax_errors_are_expression_errors(source: str) -> None:
    with pytest.raises(ExpressionError, match="invalid expression"):
        compile_expression(source)


def test_a_refused_expression_names_itself_and_the_offending_node() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression("().__class__")
    assert "().__class__" in str(info.value)
    assert "Attribute" in str(info.value)


def test_unknown_names_fail_at_evaluation_with_the_name() -> None:
    compile_expression("missing > 1")  # parses: names are only known at run time
    with pytest.raises(ExpressionError, match="unknown name 'missing'"):
        evaluate("missing > 1", CTX)


def test_builtins_are_not_reachable_as_names() -> None:
    for name in ("__builtins__", "__import__", "print", "open", "globals"):
        with pytest.raises(ExpressionError, match="unknown name"):
            evaluate(name, {})


def test_runtime_errors_become_expression_errors() -> None:
    with pytest.raises(ExpressionError, match="ZeroDivisionError"):
        evaluate("n / 0", CTX)
    with pytest.raises(ExpressionError, match="KeyError"):
        evaluate("result['nope']", CTX)
    with pytest.raises(ExpressionError, match="IndexError"):
        evaluate("items[10]", CTX)
    with pytest.raises(ExpressionError, match="TypeError"):
        evaluate("n + 'x'", CTX)
    with pytest.raises(ExpressionError, match="ValueError"):
        evaluate("int('x')", CTX)


def test_expression_error_is_a_value_error() -> None:
    assert issubclass(ExpressionError, ValueError)


def test_the_context_is_not_changed_by_evaluation() -> None:
    ctx: dict[str, Any] = {"items": [1, 2]}
    evaluate("items + [3]", ctx)
    assert ctx == {"items": [1, 2]}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (True, True),
        (False, False),
        ("n > 5", True),
        ("n > 50", False),
        ("items", True),  # truthiness of the value
        ("empty", False),
        ({"expression": "region == 'eu'"}, True),
        ({"expression": "region == 'us'"}, False),
        pytest.param({"expression": True}, True, id="expression-dict-true"),
        pytest.param({"expression": False}, False, id="expression-dict-false"),
    ],
)
def test_is_true_accepts_bools_expressions_and_expression_dicts(
    condition: Any, expected: bool
) -> None:
    assert is_true(condition, CTX) is expected


@pytest.mark.parametrize("condition", [1, None, 0.5, ["n > 1"], {"expr": "n"}])
def test_is_true_refuses_other_condition_types(condition: Any) -> None:
    with pytest.raises(ExpressionError, match="condition must be a bool or an expression"):
        is_true(condition, CTX)
