"""Countdown: reach a target by combining given numbers with + - * /, checked exactly.

The expression is model output, so it is never `eval`-ed: an `ast` walk allows integer
literals, the four operations, unary minus and parentheses, in exact `Fraction` arithmetic.
"""

from __future__ import annotations

import ast
from collections import Counter
from fractions import Fraction

MAX_EXPRESSION_CHARS = 200
# LaTeX and typographic spellings models put inside \boxed{}, mapped to Python operators.
_SPELLINGS = (
    ("\\left", ""),
    ("\\right", ""),
    ("\\times", "*"),
    ("\\cdot", "*"),
    ("\\div", "/"),
    ("×", "*"),
    ("÷", "/"),
    ("−", "-"),
)
_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


def evaluate(expression: str) -> tuple[Fraction, list[int]]:
    """Value of an arithmetic expression and the literals it uses; ValueError if not allowed.

    Division by zero raises ZeroDivisionError, which callers treat as a wrong answer.
    """
    tree = ast.parse(expression.strip(), mode="eval")
    used: list[int] = []

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        raise ValueError(f"not allowed in a countdown expression: {ast.dump(node)[:80]}")

    return walk(tree.body), used


def check(pred: str, target: int | str, numbers: list[int], use_all: bool = True) -> bool:
    """Whether `pred` (`expr` or `expr = target`) evaluates to `target` using `numbers`.

    With `use_all` each number is used exactly once; otherwise each at most once.
    """
    expression = pred.split("=", 1)[0]
    for spelling, operator in _SPELLINGS:
        expression = expression.replace(spelling, operator)
    if len(expression) > MAX_EXPRESSION_CHARS:
        return False
    try:
        value, used = evaluate(expression)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError, MemoryError):
        return False
    have, given = Counter(used), Counter(int(n) for n in numbers)
    if use_all and have != given:
        return False
    if not use_all and any(count > given[n] for n, count in have.items()):
        return False
    return value == Fraction(str(target).strip())
