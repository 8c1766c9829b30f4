"""Properties of the expression evaluator (stabilize/expressions.py) over generated input.

Conditions are written by workflow authors: whatever text they hold, compiling and
evaluating it either gives a plain value or raises ``ExpressionError`` with a message; it
never runs code, reaches attributes, or builds without bound. Expressions generated from a
grammar of the documented operators evaluate to what a reference interpreter says.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stabilize.expressions import ExpressionError, compile_expression, evaluate, is_true

BUILT_BOUND = 2_000_000
"""Items and characters a result may hold (the evaluator builds at most 1,000,000, and
``str()`` of that counts twice at most)."""


class Canary:
    """A context value that records every non-dunder attribute reached on it."""

    def __init__(self) -> None:
        object.__setattr__(self, "reached", [])

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("__"):
            object.__getattribute__(self, "reached").append(name)
        return object.__getattribute__(self, name)

    def fire(self) -> str:
        return "fired"


def reached(canary: Canary) -> list[str]:
    names: list[str] = object.__getattribute__(canary, "reached")
    return names


def context(canary: Canary | None = None) -> dict[str, Any]:
    return {
        "x": [1, 2, 3],
        "s": "abc",
        "n": 7,
        "d": {"k": [1, {"deep": "v"}]},
        "canary": canary if canary is not None else Canary(),
    }


PLAIN = (int, float, str, bytes, bool, type(None), list, tuple, dict, set, slice, Canary)


def plain_size(value: Any, cap: int) -> int:
    """Items and characters in a plain value (nested ones counted); fails on anything else."""
    total = 0
    stack = [value]
    while stack and total <= cap:
        item = stack.pop()
        assert type(item) in PLAIN, f"an expression handed back a {type(item).__name__}"
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, list | tuple | set):
            total += len(item)
            stack.extend(item)
        elif isinstance(item, dict):
            total += len(item)
            stack.extend([*item.keys(), *item.values()])
    return total


def attempt(call: Callable[[], Any]) -> tuple[Any, str | None]:
    """What ``call`` returns, or the message of the ExpressionError it raises."""
    try:
        return call(), None
    except ExpressionError as exc:
        return None, str(exc)


def check_refused_or_plain(source: str, ctx: Mapping[str, Any]) -> None:
    """Evaluate: a plain, bounded value, or an ExpressionError with a message."""
    value, refusal = attempt(lambda: evaluate(source, ctx))
    if refusal is None:
        assert plain_size(value, BUILT_BOUND) <= BUILT_BOUND
    else:
        assert refusal.startswith(("expression ", "invalid expression ")), refusal


# -- any text ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
@example("-" * 9000 + "1")  # the parser's MemoryError leaked
@example("1" + "+1" * 4900)  # the parser's RecursionError leaked
@example("x" + "[0]" * 3000)
@example("not " * 2400 + "n")
@example("'\x00'")
@example("'\\N{nope}'")
@example("1" * 5000)
@example("x" * 20_000)
@example("0J")  # a complex number was handed back
@example("...")
def test_any_text_compiles_or_is_refused_with_an_expression_error(source: str) -> None:
    tree, refusal = attempt(lambda: compile_expression(source))
    assert isinstance(tree, ast.Expression) or refusal
    check_refused_or_plain(source, context())
    truth, refusal = attempt(lambda: is_true(source, context()))
    assert truth in (True, False) or refusal


# -- hostile payloads -------------------------------------------------------------------------

FRAGMENTS = [
    "__import__('os')",
    "__import__",
    "().__class__",
    "x.__class__.__mro__",
    ".__subclasses__()",
    "__builtins__",
    "globals()",
    "eval",
    "exec('1')",
    "open('/etc/passwd')",
    "getattr",
    "lambda: 0",
    "[c for c in x]",
    "(y := 1)",
    "canary",
    "canary.fire()",
    "9**9**9",
    "'a'*10**9",
    "'a' * 99999",
    "[[1] * 100000] * 100000",
    "[x] * 50000",
    "b'x' * 1000000000",
    "'%0999999999d' % 1",
    "round(5, -10000000)",
    "str",
    "str(x)",
    "len",
    "100000",
    "x",
    "s",
    "d['k']",
    "(",
    ")",
    "[",
    "]",
    "*",
    "+",
    "%",
    "-",
    ",",
    ".",
    ":",
    " if ",
    " else ",
    " and ",
    " or ",
    "not ",
    "[0]",
    "1",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=10), st.sampled_from(["", " "]))
@example(["str(", "[[1] * 100000] * 100000", ")"], "")
@example(["str(", "[x] * 50000", ")"], "")
@example(["b'x' * 1000000000"], "")
@example(["'%0999999999d' % 1"], "")
@example(["round(5, -10000000)"], "")
def test_hostile_payloads_are_refused_or_bounded_and_run_no_code(
    fragments: list[str], sep: str
) -> None:
    canary = Canary()
    check_refused_or_plain(sep.join(fragments), context(canary))
    assert reached(canary) == []


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["-", "+", "~", "not ", "(", "[", "{1:", "+1", "[0]", "*1", " if 1 else 1"]),
    st.integers(min_value=1, max_value=6000),
)
def test_deep_nesting_is_refused_with_an_expression_error(piece: str, depth: int) -> None:
    repeated = piece * depth
    if piece in ("-", "+", "~", "not ", "(", "[", "{1:"):
        closing = {"(": ")", "[": "]", "{1:": "}"}.get(piece, "") * depth
        source = f"{repeated}1{closing}"
    else:
        source = f"1{repeated}"
    check_refused_or_plain(source, context())


# -- regressions: each refusal names what is wrong and leaves the next evaluation alone -----


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("-" * 9000 + "1", "nested too deeply"),
        ("1" + "+1" * 4900, "nested too deeply"),
        ("'%01000001d' % 1", "% formatting of strings is not allowed"),
        ("'%s' % x", "% formatting of strings is not allowed"),
        ("b'%d' % 1", "% formatting of strings is not allowed"),
        ("round(5, -100000)", "round() takes at most 4300 digits"),
        ("b'x' * 100001", "result longer than 100000 items"),
        ("[[1] * 100000] * 2", "result longer than 100000 items"),
        (
            "str([[1] * 10000] * 9) + str([[1] * 10000] * 9)",
            "builds more than 1000000 items and characters",
        ),
        ("[" + "'a' * 99999, " * 11 + "]", "builds more than 1000000 items and characters"),
        ("len(x[:] + x[:])", None),
    ],
)
def test_bombs_are_refused_naming_the_limit(source: str, why: str | None) -> None:
    ctx = {"x": list(range(600_000))}
    if why is None:
        # Copies of a big context list count too: 1,200,000 items would be built.
        why = "builds more than 1000000 items and characters"
    with pytest.raises(ExpressionError) as info:
        evaluate(source, ctx)
    assert why in str(info.value)
    assert len(str(info.value)) < 400  # a long source is quoted cut short
    assert ctx == {"x": list(range(600_000))}
    # The budget belongs to one evaluation: the next one starts afresh.
    assert evaluate("len(str([1] * 90000))", ctx) == 270_000


def test_a_source_longer_than_allowed_is_refused_with_its_length() -> None:
    source = "1 + " * 2600 + "1"
    with pytest.raises(ExpressionError, match=r"10401 characters long, more than the 10000"):
        compile_expression(source)


@pytest.mark.parametrize("source", ["0j", "1 + 2j", "...", "x[...]"])
def test_literals_json_has_no_counterpart_for_are_refused(source: str) -> None:
    with pytest.raises(ExpressionError, match=r"the literal (0j|2j|Ellipsis) is not allowed"):
        compile_expression(source)


def test_the_documented_repetition_still_works() -> None:
    assert evaluate("len('ab' * 50000)", {}) == 100_000
    assert evaluate("[0] * 3", {}) == [0, 0, 0]
    assert evaluate("'x' * -1", {}) == ""
    assert evaluate("n % 4", {"n": 7}) == 3


# -- generated valid expressions against a reference interpreter -------------------------------


class Fails:
    """The reference's verdict that evaluation raises (division by zero, a bad index)."""

    def __repr__(self) -> str:
        return "FAILS"


FAILS = Fails()
Expr = tuple[str, Any]
"""Source text (fully parenthesized) and the value the reference gives it."""

INTS = {"i": 7, "j": -3, "zero": 0}
BOOLS = {"yes": True, "no": False}
STRS = {"word": "héllo", "blank": ""}
LISTS = {"xs": [4, 5, 6], "none": []}
CTX: dict[str, Any] = {**INTS, **BOOLS, **STRS, **LISTS}


def strict(fn: Callable[..., Any]) -> Callable[..., Expr]:
    """Combine operands: any operand that fails makes the whole fail (no short circuit)."""

    def combine(template: str, *parts: Expr) -> Expr:
        values = [v for _, v in parts]
        text = template.format(*(t for t, _ in parts))
        if any(v is FAILS for v in values):
            return text, FAILS
        try:
            return text, fn(*values)
        except (ZeroDivisionError, IndexError):
            return text, FAILS

    return combine


def binary(symbol: str, fn: Callable[[Any, Any], Any]) -> Callable[[Expr, Expr], Expr]:
    return lambda a, b: strict(fn)(f"({{}} {symbol} {{}})", a, b)


INT_OPS = [
    binary("+", operator.add),
    binary("-", operator.sub),
    binary("*", operator.mul),
    binary("//", operator.floordiv),
    binary("%", operator.mod),
]
COMPARISONS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}

int_leaves = st.one_of(
    st.integers(-1000, 1000).map(lambda n: (f"({n})", n)),
    st.sampled_from(sorted(INTS.items())),
    st.sampled_from(sorted(LISTS)).map(lambda k: (f"len({k})", len(LISTS[k]))),
    st.sampled_from(sorted(STRS)).map(lambda k: (f"len({k})", len(STRS[k]))),
)


def chain(first: Expr, rest: list[tuple[str, Expr]]) -> Expr:
    """``a < b <= c``: stops at the first false comparison, before evaluating the rest."""
    text = first[0] + "".join(f" {op} {t}" for op, (t, _) in rest)
    left = first[1]
    if left is FAILS:
        return f"({text})", FAILS
    for op, (_, right) in rest:
        if right is FAILS:
            return f"({text})", FAILS
        if not COMPARISONS[op](left, right):
            return f"({text})", False
        left = right
    return f"({text})", True


def comparisons(ints: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.builds(
        chain,
        ints,
        st.lists(st.tuples(st.sampled_from(sorted(COMPARISONS)), ints), min_size=1, max_size=3),
    )


def boolean(op: str, a: Expr, b: Expr) -> Expr:
    text = f"({a[0]} {op} {b[0]})"
    if a[1] is FAILS:
        return text, FAILS
    decided = (not a[1]) if op == "and" else bool(a[1])
    return text, a[1] if decided else b[1]


def conditional(test: Expr, body: Expr, orelse: Expr) -> Expr:
    text = f"({body[0]} if {test[0]} else {orelse[0]})"
    if test[1] is FAILS:
        return text, FAILS
    return text, body[1] if test[1] else orelse[1]


def membership(a: Expr, name: str, negate: bool) -> Expr:
    op = "not in" if negate else "in"
    return strict(lambda v: (v not in LISTS[name]) if negate else (v in LISTS[name]))(
        f"({{}} {op} {name})", a
    )


bool_leaves = st.one_of(
    st.sampled_from([("true", True), ("false", False), ("True", True), ("None == null", True)]),
    st.sampled_from(sorted(BOOLS.items())),
    comparisons(int_leaves),
)


def extend_ints(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.one_of(
        st.builds(lambda f, a, b: f(a, b), st.sampled_from(INT_OPS), children, children),
        children.map(lambda a: strict(operator.neg)("(-{})", a)),
        children.map(lambda a: strict(abs)("abs({})", a)),
        st.builds(lambda a, b: strict(min)("min({}, {})", a, b), children, children),
        st.builds(lambda a, b: strict(max)("max({}, {})", a, b), children, children),
        st.builds(
            lambda name, a: strict(lambda k: LISTS[name][k])(f"{name}[{{}}]", a),
            st.sampled_from(sorted(LISTS)),
            children,
        ),
        st.builds(conditional, bool_leaves, children, children),
    )


ints = st.recursive(int_leaves, extend_ints, max_leaves=12)


def extend_bools(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.one_of(
        children.map(lambda p: strict(operator.not_)("(not {})", p)),
        st.builds(boolean, st.sampled_from(["and", "or"]), children, children),
        st.builds(conditional, children, children, children),
    )


bools = st.recursive(
    st.one_of(
        bool_leaves,
        comparisons(ints),
        st.builds(membership, ints, st.sampled_from(sorted(LISTS)), st.booleans()),
    ),
    extend_bools,
    max_leaves=8,
)

str_leaves = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6).map(
        lambda t: (repr(t), t)
    ),
    st.sampled_from(sorted(STRS.items())),
    ints.map(lambda a: strict(str)("str({})", a)),
)


def extend_strs(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.one_of(
        st.builds(binary("+", operator.add), children, children),
        st.builds(
            lambda a, n: strict(operator.mul)("({} * {})", a, (str(n), n)),
            children,
            st.integers(-1, 3),
        ),
    )


strs = st.recursive(str_leaves, extend_strs, max_leaves=6)
str_tests = st.builds(
    lambda a, b, negate: strict(lambda x, y: (x not in y) if negate else (x in y))(
        "({} not in {})" if negate else "({} in {})", a, b
    ),
    strs,
    strs,
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(ints, bools, strs, str_tests))
@example(("(7 // zero)", FAILS))
@example(("(no and (1 // zero))", False))
@example(("(1 > 2 > (1 // zero))", False))
@example(("(xs[(-4)])", FAILS))
def test_generated_expressions_evaluate_as_the_reference_says(expr: Expr) -> None:
    source, expected = expr
    if expected is FAILS:
        with pytest.raises(ExpressionError, match=r"failed: (ZeroDivisionError|IndexError)"):
            evaluate(source, CTX)
        return
    got = evaluate(source, CTX)
    assert got == expected
    assert type(got) is type(expected)  # True is not 1, 1 is not 1.0
