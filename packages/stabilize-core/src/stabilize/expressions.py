"""A small, safe expression language for conditions (no ``eval``).

Expressions are Python-like: ``score >= 0.8 and region in ["eu", "us"]``, ``len(items) > 2``,
``not approved``, ``result["status"] == "ok"``. Names are looked up in the context given;
only literals (strings, bytes, numbers, booleans, None), comparisons, boolean and
arithmetic operators, subscripts and a few pure functions (``len``, ``abs``, ``min``,
``max``, ``int``, ``float``, ``str``, ``bool``, ``round``) are allowed. Anything else
(attributes, lambdas, other calls, comprehensions, ``**``, ``%`` formatting of strings,
``1j``) is refused. Work is bounded too: a source longer than
10,000 characters is refused, and one evaluation builds at most 1,000,000 items and
characters, so that a short expression cannot eat a worker's memory or time
(``str([[1] * 100000] * 100000)``).
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


_MAX_SOURCE = 10_000
"""The longest expression source accepted, in characters."""
_MAX_BUILT = 1_000_000
"""The most items and characters one evaluation may build (strings, lists, ``str()``)."""
_MAX_SEQUENCE = 100_000
"""The longest string or list one repetition (``"a" * n``) may build, nested items counted."""
_MAX_ROUND_DIGITS = 4_300
"""The largest ``ndigits`` of ``round`` (``round(5, -10**7)`` computes ``10**10**7``)."""
_SHOWN = 200
"""How much of a long source an error message quotes."""

_SEQUENCES = (str, bytes, list, tuple)
_LITERALS = frozenset({str, bytes, int, float, bool, type(None)})
"""The constants an expression may write (not ``1j`` or ``...``)."""
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
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
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


def _shown(source: str) -> str:
    """The source as error messages quote it (a long one cut short)."""
    return repr(source if len(source) <= _SHOWN else f"{source[:_SHOWN]}...")


@functools.lru_cache(maxsize=1024)
def compile_expression(source: str) -> ast.Expression:
    """Parse and check an expression; raise :class:`ExpressionError` if it is not allowed."""
    if len(source) > _MAX_SOURCE:
        raise ExpressionError(
            f"expression {_shown(source)} is {len(source)} characters long, "
            f"more than the {_MAX_SOURCE} allowed"
        )
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError) as exc:
        message = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        raise ExpressionError(f"invalid expression {_shown(source)}: {message}") from None
    except (MemoryError, RecursionError):
        # CPython's parser gives up on deep nesting (---...1, 1+1+...+1) with these.
        raise ExpressionError(f"expression {_shown(source)} is nested too deeply") from None
    for node in ast.walk(tree):
        _check_node(node, source)
    return tree


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """Evaluate ``source`` with names taken from ``context``.

    Raises:
        ExpressionError: the expression is not allowed, names an unknown key, fails, or
            would build more than 1,000,000 items and characters.
    """
    tree = compile_expression(source)
    try:
        return _Evaluation(context, source).eval(tree.body)
    except ExpressionError:
        raise
    except RecursionError:
        raise ExpressionError(f"expression {_shown(source)} is nested too deeply") from None
    except Exception as exc:
        raise ExpressionError(
            f"expression {_shown(source)} failed: {type(exc).__name__}: {exc}"
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
            f"expression {_shown(source)} uses {type(node).__name__}, which is not allowed"
        )
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise ExpressionError(
                f"expression {_shown(source)} calls something other than {sorted(_FUNCTIONS)}"
            )
        if node.keywords:
            raise ExpressionError(f"expression {_shown(source)}: keyword arguments are not allowed")
    if isinstance(node, ast.Constant) and type(node.value) not in _LITERALS:
        raise ExpressionError(
            f"expression {_shown(source)}: the literal {node.value!r} is not allowed"
        )
    if isinstance(node, ast.Dict) and any(k is None for k in node.keys):
        raise ExpressionError(f"expression {_shown(source)}: ** unpacking is not allowed")
    if isinstance(node, ast.Starred):
        raise ExpressionError(f"expression {_shown(source)}: * unpacking is not allowed")


def _size(value: Any, cap: int) -> int:
    """Items and characters in ``value``, nested ones counted (stops once above ``cap``).

    A repeated list holds one object many times: its size is what ``str()`` or ``==``
    walks, not what it takes in memory.
    """
    total = 0
    stack = [value]
    while stack and total <= cap:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, list | tuple | set | frozenset):
            total += len(item)
            stack.extend(item)
        elif isinstance(item, Mapping):
            total += len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
    return total


class _Evaluation:
    """One evaluation: the names it reads and what it has built so far."""

    def __init__(self, ctx: Mapping[str, Any], source: str) -> None:
        self.ctx = ctx
        self.source = source
        self.built = 0

    def charge(self, size: int) -> None:
        """Count ``size`` new items or characters against 1,000,000."""
        self.built += size
        if self.built > _MAX_BUILT:
            raise ExpressionError(
                f"expression {_shown(self.source)} builds more than {_MAX_BUILT} "
                "items and characters"
            )

    def fail(self, why: str) -> ExpressionError:
        return ExpressionError(f"expression {_shown(self.source)}: {why}")

    def binary(self, op: ast.operator, a: Any, b: Any) -> Any:
        if isinstance(op, ast.Mult):
            for seq, n in ((a, b), (b, a)):
                if isinstance(seq, _SEQUENCES) and isinstance(n, int):
                    size = _size(seq, _MAX_SEQUENCE) * max(n, 0)
                    if size > _MAX_SEQUENCE:
                        raise self.fail(f"result longer than {_MAX_SEQUENCE} items")
                    self.charge(size)
        elif isinstance(op, ast.Mod) and isinstance(a, str | bytes):
            # '%0999999999d' % 1 builds a gigabyte from 17 characters.
            raise self.fail("% formatting of strings is not allowed")
        result = _BINARY[type(op)](a, b)
        if isinstance(op, ast.Add) and isinstance(result, _SEQUENCES):
            self.charge(len(result))
        return result

    def call(self, name: str, args: list[Any]) -> Any:
        if name == "str" and args:
            self.charge(_size(args[0], _MAX_BUILT - self.built))
        elif name == "round" and len(args) == 2 and abs(args[1]) > _MAX_ROUND_DIGITS:
            raise self.fail(f"round() takes at most {_MAX_ROUND_DIGITS} digits")
        result = _FUNCTIONS[name](*args)
        if isinstance(result, str):
            self.charge(len(result))
        return result

    def eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.ctx:
                return self.ctx[node.id]
            if node.id.lower() in _CONSTANTS:
                return _CONSTANTS[node.id.lower()]
            raise self.fail(f"unknown name {node.id!r}")
        if isinstance(node, ast.BoolOp):
            is_and = isinstance(node.op, ast.And)
            value: Any = is_and
            for item in node.values:
                value = self.eval(item)
                if bool(value) is not is_and:
                    return value
            return value
        if isinstance(node, ast.UnaryOp):
            operand = self.eval(node.operand)
            if isinstance(node.op, ast.Not):
                return not operand
            return -operand if isinstance(node.op, ast.USub) else +operand
        if isinstance(node, ast.BinOp):
            return self.binary(node.op, self.eval(node.left), self.eval(node.right))
        if isinstance(node, ast.Compare):
            left = self.eval(node.left)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = self.eval(right_node)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.Subscript):
            container = self.eval(node.value)
            found = container[self.eval(node.slice)]
            if isinstance(node.slice, ast.Slice) and isinstance(found, _SEQUENCES):
                self.charge(len(found))
            return found
        if isinstance(node, ast.Slice):
            parts = (node.lower, node.upper, node.step)
            return slice(*(None if p is None else self.eval(p) for p in parts))
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            self.charge(len(node.elts))
            items = [self.eval(e) for e in node.elts]
            if isinstance(node, ast.List):
                return items
            return tuple(items) if isinstance(node, ast.Tuple) else set(items)
        if isinstance(node, ast.Dict):
            self.charge(len(node.keys))
            return {
                self.eval(k): self.eval(v)
                for k, v in zip(node.keys, node.values, strict=True)
                if k is not None
            }
        if isinstance(node, ast.IfExp):
            return self.eval(node.body if self.eval(node.test) else node.orelse)
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            return self.call(node.func.id, [self.eval(a) for a in node.args])
        raise self.fail(f"unsupported {type(node).__name__}")
