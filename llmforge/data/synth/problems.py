"""Procedural arithmetic and word problems with worked steps and a verifiable integer answer.

A `Problem` carries its question, the worked steps that lead to the answer and a
canonical `key` (the computation itself, e.g. ``(12+7)-5``). Two problems with the same
key are the same item for held-out purposes, whatever names or objects the wording uses,
so splits are made on keys (see `splits.py`).

Difficulty levels are sized for 1-10M-parameter models trained for minutes:

- 1: one- and two-digit addition and subtraction, one-step word problems with small numbers;
- 2: two-digit addition/subtraction, two-digit times one-digit, one- and two-step word problems;
- 3: three-digit addition/subtraction, two-digit times two-digit, two-step word problems.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

DIFFICULTIES = (1, 2, 3)

NAMES = ("Ada", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivy", "Jon", "Kai", "Lea")
ITEMS = ("apples", "books", "coins", "pens", "shells", "stamps", "marbles", "cards", "eggs")
CONTAINERS = ("boxes", "bags", "baskets", "jars", "crates")


@dataclass(frozen=True)
class Problem:
    """One problem: `question` text, worked `steps`, integer `answer` and canonical `key`."""

    key: str
    question: str
    steps: tuple[str, ...]
    answer: int
    kind: str
    difficulty: int
    ops: tuple[str, ...] = ()  # keys of each operation, for two-step problems

    def operation_keys(self) -> list[str]:
        """Keys of every computation the solution performs: whole operations and steps."""
        return list(self.ops or (self.key,)) + step_keys(self.steps)

    def solution(self) -> str:
        """The worked steps followed by the boxed answer, as one paragraph."""
        return " ".join(self.steps) + f" The answer is \\boxed{{{self.answer}}}."


# ------------------------------------------------------------------ worked steps per operation


def add_steps(a: int, b: int) -> list[str]:
    """Add `b` to `a` one place value at a time, largest first: 47 + 30 = 77, 77 + 8 = 85."""
    steps, total = [], a
    for part in _place_parts(b):
        steps.append(f"{total} + {part} = {total + part}.")
        total += part
    return steps or [f"{a} + 0 = {a}."]


def sub_steps(a: int, b: int) -> list[str]:
    """Subtract `b` from `a` one place value at a time: 85 - 30 = 55, 55 - 8 = 47."""
    steps, total = [], a
    for part in _place_parts(b):
        steps.append(f"{total} - {part} = {total - part}.")
        total -= part
    return steps or [f"{a} - 0 = {a}."]


def mul_steps(a: int, b: int) -> list[str]:
    """Multiply by splitting `b` into place values, then add the partial products."""
    parts = _place_parts(b)
    if len(parts) <= 1:
        return [f"{a} * {b} = {a * b}."]
    products = [a * p for p in parts]
    steps = [f"{a} * {p} = {a * p}." for p in parts]
    steps.append(" + ".join(map(str, products)) + f" = {a * b}.")
    return steps


def _place_parts(n: int) -> list[int]:
    """Split a non-negative integer into its non-zero place values: 308 -> [300, 8]."""
    digits = str(n)
    return [int(d) * 10 ** (len(digits) - i - 1) for i, d in enumerate(digits) if d != "0"]


STEPS = {"+": add_steps, "-": sub_steps, "*": mul_steps}
STEP_PATTERN = re.compile(r"^(-?\d+) ([-+*]) (-?\d+) = (-?\d+)\.$")


def step_keys(steps: list[str] | tuple[str, ...]) -> list[str]:
    """The canonical keys of the operations written out in worked steps."""
    keys = []
    for step in steps:
        match = STEP_PATTERN.match(step)
        if match is None:
            raise ValueError(f"not a worked step: {step!r}")
        a, op, b, _ = match.groups()
        keys.append(op_key(op, int(a), int(b)))
    return keys


def apply(op: str, a: int, b: int) -> int:
    """Evaluate one binary operation."""
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def op_key(op: str, a: int, b: int) -> str:
    """Canonical key of one operation; + and * are commutative so operands are sorted."""
    if op in "+*":
        a, b = sorted((a, b))
    return f"{a}{op}{b}"


# ------------------------------------------------------------------ bare arithmetic


def _operands(rng: random.Random, op: str, difficulty: int) -> tuple[int, int]:
    """Draw operands for `op` at `difficulty`; subtraction never goes below zero."""
    if op == "*":
        hi_a, hi_b = {1: (9, 9), 2: (99, 9), 3: (99, 99)}[difficulty]
        return rng.randint(2, hi_a), rng.randint(2, hi_b)
    lo, hi = {1: (1, 20), 2: (10, 99), 3: (100, 999)}[difficulty]
    a, b = rng.randint(lo, hi), rng.randint(1, hi)
    if op == "-" and b > a:
        a, b = b, a
    return a, b


def arithmetic(rng: random.Random, difficulty: int) -> Problem:
    """A bare expression such as ``What is 47 + 38?``."""
    op = rng.choice("+-*" if difficulty > 1 else "+-")
    a, b = _operands(rng, op, difficulty)
    phrasing = rng.choice(("What is {e}?", "Compute {e}.", "Calculate {e}.", "{e} = ?"))
    return Problem(
        key=op_key(op, a, b),
        question=phrasing.format(e=f"{a} {op} {b}"),
        steps=tuple(STEPS[op](a, b)),
        answer=apply(op, a, b),
        kind="arithmetic",
        difficulty=difficulty,
    )


# ------------------------------------------------------------------ word problems

_ONE_STEP = {
    "+": "{name} has {a} {item}. {name} gets {b} more.",
    "-": "{name} has {a} {item} and gives away {b}.",
    "*": "{name} has {a} {box} with {b} {item} in each.",
}
_SECOND = {"+": "Then {name} finds {c} more.", "-": "Then {name} loses {c}."}
_ASK = " How many {item} does {name} have now?"


def word_problem(rng: random.Random, difficulty: int) -> Problem:
    """A short story problem with one step (difficulty 1) or up to two steps."""
    two_step = difficulty == 3 or (difficulty == 2 and rng.random() < 0.5)
    op = rng.choice("+-*" if difficulty > 1 else "+-")
    a, b = _operands(rng, op, min(difficulty, 2))
    words = dict(name=rng.choice(NAMES), item=rng.choice(ITEMS), box=rng.choice(CONTAINERS))
    story, key = _ONE_STEP[op].format(a=a, b=b, **words), op_key(op, a, b)
    steps, answer = STEPS[op](a, b), apply(op, a, b)
    ops = [key]
    if two_step:
        op2 = rng.choice("+-")
        c = rng.randint(1, 20 if difficulty < 3 else 99)
        c = min(c, answer) if op2 == "-" else c
        story += " " + _SECOND[op2].format(c=c, **words)
        key = f"({key}){op2}{c}"
        ops.append(op_key(op2, answer, c))
        steps, answer = steps + STEPS[op2](answer, c), apply(op2, answer, c)
    return Problem(
        key=key,
        question=story + _ASK.format(**words),
        steps=tuple(steps),
        answer=answer,
        kind="word2" if two_step else "word",
        difficulty=difficulty,
        ops=tuple(ops),
    )


def make_problem(rng: random.Random, difficulty: int) -> Problem:
    """Draw a bare or word problem at `difficulty` (1-3)."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty}")
    return arithmetic(rng, difficulty) if rng.random() < 0.5 else word_problem(rng, difficulty)
