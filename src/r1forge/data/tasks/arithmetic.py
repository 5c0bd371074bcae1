"""Multi-step integer arithmetic: 2–5 operands, + − ×, parentheses; solved step by step."""

from __future__ import annotations

import ast
import random

from r1forge.data.tasks import Problem, register_task

# difficulty -> (min operands, max operands, largest operand, chance of a parenthesised group)
LEVELS = {
    1: (2, 2, 9, 0.0),
    2: (2, 3, 9, 0.0),
    3: (3, 4, 12, 0.3),
    4: (3, 5, 20, 0.5),
    5: (4, 5, 50, 0.6),
}
OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}


def _expression(rng: random.Random, difficulty: int) -> str:
    low, high, largest, paren = LEVELS[difficulty]
    n = rng.randint(low, high)
    numbers = [str(rng.randint(1 if difficulty > 1 else 0, largest)) for _ in range(n)]
    ops = [rng.choice("+-*") for _ in range(n - 1)]
    if n >= 3 and rng.random() < paren:
        start = rng.randint(0, n - 2)
        end = rng.randint(start + 1, min(n - 1, start + 2))
        numbers[start] = "(" + numbers[start]
        numbers[end] = numbers[end] + ")"
        if start == 0 and end == n - 1:  # brackets around everything say nothing
            numbers[start], numbers[end] = numbers[start][1:], numbers[end][:-1]
    parts = [numbers[0]]
    for op, num in zip(ops, numbers[1:], strict=True):
        parts += [op, num]
    return " ".join(parts).replace("( ", "(").replace(" )", ")")


def solve_steps(expression: str) -> tuple[int, list[str]]:
    """Evaluate in the usual order (brackets, then ×, then left to right), one line a step."""
    tree = ast.parse(expression, mode="eval").body
    steps: list[str] = []

    def reduce(node: ast.AST) -> int:
        if isinstance(node, ast.Constant):
            return int(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -reduce(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in OPS:
            left, right = reduce(node.left), reduce(node.right)
            value = {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right}[
                type(node.op)
            ]
            steps.append(f"{left} {OPS[type(node.op)]} {right} = {value}")
            return value
        raise ValueError(f"unsupported expression: {expression!r}")

    return reduce(tree), steps


@register_task("arithmetic")
def arithmetic(rng: random.Random, difficulty: int) -> Problem:
    expression = _expression(rng, difficulty)
    value, steps = solve_steps(expression)
    thought = "\n".join(steps)
    return Problem(
        task="arithmetic",
        question=f"Compute {expression}.",
        answer=str(value),
        thought=thought,
        final=str(value),
        solution_text=f"{expression} :\n{thought}\nanswer {value}",
        difficulty=difficulty,
        verifier="math",
    )
