"""A small, safe expression language for conditions (no ``eval``).

Expressions are Python-like: ``score >= 0.8 and region in ["eu", "us"]``, ``len(items) > 2``,
``not approved``, ``result["status"] == "ok"``. Names are looked up in the context given;
only literals, comparisons, boolean and arithmetic operators, subscripts and a few pure
functions (``len``, ``abs``, ``min``, ``max``, ``int``, ``float``, ``str``, ``bool``,
``round``) are allowed. Anything else (attributes, lambdas, other calls, comprehensions) is
refused when the expression is parsed.
"""

from __future__ import annotations

import ast
import functools
import operator
from collections.abc import Callable, Mapping
from typing import Any

from stabilize.errors import StabilizeError


class ExpressionError(StabilizeError, ValueError):
    """An expression is not valid, or failed to evaluate."""


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "abs": abs,
    "min": min,
    "max": max,
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "round": round,
}
_MAX_SEQUENCE = 100_000
"""The longest string or list an expression may build (``"a" * n`` is bounded)."""


def _multiply(a: Any, b: Any) -> Any:
    for seq, n in ((a, b), (b, a)):
        if (
            isinstance(seq, str | list | tuple)
            and isinstance(n, int)
            and len(seq) * n > _MAX_SEQUENCE
        ):
            raise ExpressionError(f"result longer than {_MAX_SEQUENCE} items")
    return operator.mul(a, b)


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: _multiply,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_CONSTANTS = {"true": True, "false": False, "null": None, "none": None}


@functools.lru_cache(maxsize=1024)
def compile_expression(source: str) -> ast.Expression:
    """Parse and check an expression; raise :class:`ExpressionError` if it is not allowed."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"invalid expression {source!r}: {exc.msg}") from None
    for node in ast.walk(tree):
        _check_node(node, source)
    return tree


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """Evaluate ``source`` with names taken from ``context``.

    Raises:
        ExpressionError: the expression is not allowed, names an unknown key, or fails.
    """
    tree = compile_expression(source)
    try:
        return _eval(tree.body, context, source)
    except ExpressionError:
        raise
    except Exception as exc:
        raise ExpressionError(
            f"expression {source!r} failed: {type(exc).__name__}: {exc}"
        ) from None


def is_true(condition: Any, context: Mapping[str, Any]) -> bool:
    """Interpret a condition: a bool, an expression string, or ``{"expression": ...}``."""
    if isinstance(condition, Mapping) and "expression" in condition:
        condition = condition["expression"]
    if isinstance(condition, bool):
        return condition
    if isinstance(condition, str):
        return bool(evaluate(condition, context))
    raise ExpressionError(
        f"a condition must be a bool or an expression string, not {type(condition).__name__}"
    )


_ALLOWED = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.BinOp,
    ast.Compare,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.Subscript,
    ast.Slice,
    ast.List,
    ast.Tuple,
    ast.Dict,
    ast.Set,
    ast.IfExp,
    ast.Call,
    *_BINARY,
    *_COMPARE,
)


def _check_node(node: ast.AST, source: str) -> None:
    if not isinstance(node, _ALLOWED):
        raise ExpressionError(
            f"expression {source!r} uses {type(node).__name__}, which is not allowed"
        )
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise ExpressionError(
                f"expression {source!r} calls something other than {sorted(_FUNCTIONS)}"
            )
        if node.keywords:
            raise ExpressionError(f"expression {source!r}: keyword arguments are not allowed")
    if isinstance(node, ast.Dict) and any(k is None for k in node.keys):
        raise ExpressionError(f"expression {source!r}: ** unpacking is not allowed")
    if isinstance(node, ast.Starred):
        raise ExpressionError(f"expression {source!r}: * unpacking is not allowed")


def _eval(node: ast.AST, ctx: Mapping[str, Any], source: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in ctx:
            return ctx[node.id]
        if node.id.lower() in _CONSTANTS:
            return _CONSTANTS[node.id.lower()]
        raise ExpressionError(f"expression {source!r}: unknown name {node.id!r}")
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            value: Any = True
            for item in node.values:
                value = _eval(item, ctx, source)
                if not value:
                    return value
            return value
        value = False
        for item in node.values:
            value = _eval(item, ctx, source)
            if value:
                return value
        return value
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, ctx, source)
        if isinstance(node.op, ast.Not):
            return not operand
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, ctx, source), _eval(node.right, ctx, source))
    if isinstance(node, ast.Compare):
        left = _eval(node.left, ctx, source)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, ctx, source)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Subscript):
        container = _eval(node.value, ctx, source)
        return container[_eval(node.slice, ctx, source)]
    if isinstance(node, ast.Slice):
        parts = (node.lower, node.upper, node.step)
        return slice(*(None if p is None else _eval(p, ctx, source) for p in parts))
    if isinstance(node, ast.List):
        return [_eval(e, ctx, source) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_eval(e, ctx, source) for e in node.elts)
    if isinstance(node, ast.Set):
        return {_eval(e, ctx, source) for e in node.elts}
    if isinstance(node, ast.Dict):
        return {
            _eval(k, ctx, source): _eval(v, ctx, source)
            for k, v in zip(node.keys, node.values, strict=True)
            if k is not None
        }
    if isinstance(node, ast.IfExp):
        branch = node.body if _eval(node.test, ctx, source) else node.orelse
        return _eval(branch, ctx, source)
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        args = [_eval(a, ctx, source) for a in node.args]
        return _FUNCTIONS[node.func.id](*args)
    raise ExpressionError(f"expression {source!r}: unsupported {type(node).__name__}")
