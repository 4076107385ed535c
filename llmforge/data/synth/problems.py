"""Procedural arithmetic and word problems with worked steps and a verifiable integer answer.

A `Problem` carries its question, the worked steps that lead to the answer and a
canonical `key` (the computation itself, e.g. ``(12+7)-5``). Two problems with the same
key are the same item for held-out purposes, whatever names or objects the wording uses,
so splits are made on keys (see `splits.py`).

Each operation is worked in columns, the way it is taught on paper, one short step per
operation: ``47+38: 7+8=15, 4+3+1=8, so 85.`` The step restates the operation, then works
one digit column at a time from the right (carries and borrows written out, the shorter
operand padded with 0), then gives the result. Every column is a single-digit fact, so a
model that has learnt the facts and the procedure can solve a held-out problem it never
saw: a 1.4M-parameter model learns this format in about a thousand steps, where it never
learns to add 47 + 38 in one go. Single-digit facts are therefore building blocks, never
items: every problem has an operand of at least two digits.

Difficulty levels are sized for 1-10M-parameter models trained for minutes:

- 1: two-digit addition and subtraction, bare or as a one-step word problem;
- 2: addition and subtraction up to three digits, two-digit times one-digit;
- 3: three-digit times one-digit, and two-step word problems.
"""

from __future__ import annotations

import random
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
    steps: tuple[str, ...]  # one worked step per operation
    answer: int
    kind: str
    difficulty: int
    ops: tuple[str, ...] = ()  # keys of each operation, for two-step problems

    def operation_keys(self) -> list[str]:
        """Keys of every operation the solution performs (one for a one-step problem)."""
        return list(self.ops or (self.key,))

    def solution(self) -> str:
        """The worked steps followed by the boxed answer, as one paragraph."""
        return " ".join(self.steps) + f" The answer is \\boxed{{{self.answer}}}."


# ------------------------------------------------------------------ worked columns


@dataclass(frozen=True)
class Slip:
    """A weak solver's mistake in one column: its result off by `delta`, or its carry
    (borrow) forgotten. Later columns carry on from the mistake, as a weak solver would."""

    column: int
    delta: int = 0
    drop_carry: bool = False


def columns(a: int, op: str, b: int, slip: Slip | None = None) -> tuple[list[str], int]:
    """The column working of ``a op b`` (right to left) and the result it arrives at.

    ``+`` and ``-`` pad the shorter operand with 0 (``-`` needs a >= b); ``*`` needs a
    one-digit `b` and multiplies each digit of `a`, adding the carry. Without a `slip` the
    result is exact.
    """
    if op == "*" and not 0 <= b <= 9:
        raise ValueError(f"column multiplication takes a one-digit multiplier, got {b}")
    if op == "-" and b > a:
        raise ValueError(f"column subtraction needs a >= b, got {a} - {b}")
    width = len(str(a)) if op == "*" else max(len(str(a)), len(str(b)))
    xs, ys = _digits(a, width), _digits(b, width)
    texts, digits, carry = [], [], 0
    for i in range(width):
        x, y = xs[i], (b if op == "*" else ys[i])
        c = 0 if slip and slip.column == i and slip.drop_carry else carry
        text, value, carry = _column(op, x, y, c)
        if slip and slip.column == i and slip.delta:
            value = value + slip.delta if 0 <= value + slip.delta <= 9 else value - slip.delta
            text = text.rsplit("=", 1)[0] + f"={value + 10 * carry if op != '-' else value}"
        texts.append(text)
        digits.append(value)
    result = int("".join(map(str, reversed(digits)))) + (carry * 10**width if op != "-" else 0)
    return texts, result


def _digits(n: int, width: int) -> list[int]:
    """Digits of `n`, least significant first, padded with zeros to `width`."""
    return [int(d) for d in str(n).zfill(width)[::-1]]


def _column(op: str, x: int, y: int, carry: int) -> tuple[str, int, int]:
    """One column: its text, the digit it writes and the carry (or borrow) it passes on."""
    extra = f"{'-' if op == '-' else '+'}{carry}" if carry else ""
    if op == "+":
        total = x + y + carry
        return f"{x}+{y}{extra}={total}", total % 10, total // 10
    if op == "*":
        total = x * y + carry
        return f"{x}*{y}{extra}={total}", total % 10, total // 10
    borrow = int(x - y - carry < 0)
    top = x + 10 * borrow
    return f"{top}-{y}{extra}={top - y - carry}", top - y - carry, borrow


def worked_step(a: int, op: str, b: int, slip: Slip | None = None) -> tuple[str, int]:
    """One operation as a worked step, ``47+38: 7+8=15, 4+3+1=8, so 85.``, and its result."""
    texts, result = columns(a, op, b, slip)
    return f"{a}{op}{b}: " + ", ".join(texts) + f", so {result}.", result


def apply(op: str, a: int, b: int) -> int:
    """Evaluate one binary operation."""
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def op_key(op: str, a: int, b: int) -> str:
    """Canonical key of one operation; + and * are commutative so operands are sorted."""
    if op in "+*":
        a, b = sorted((a, b))
    return f"{a}{op}{b}"


# ------------------------------------------------------------------ bare arithmetic

# (low, high) of each operand per level; the first operand always has two digits or more.
_RANGES = {
    "+": {1: ((10, 99), (1, 99)), 2: ((100, 999), (1, 999)), 3: ((100, 999), (10, 999))},
    "-": {1: ((10, 99), (1, 99)), 2: ((100, 999), (1, 999)), 3: ((100, 999), (10, 999))},
    "*": {1: ((10, 99), (2, 9)), 2: ((10, 99), (2, 9)), 3: ((100, 999), (2, 9))},
}
_OPS = {1: "+-", 2: "+-*", 3: "*"}


def _operands(rng: random.Random, op: str, difficulty: int) -> tuple[int, int]:
    """Draw operands for `op` at `difficulty`; subtraction never goes below zero."""
    (lo_a, hi_a), (lo_b, hi_b) = _RANGES[op][difficulty]
    a, b = rng.randint(lo_a, hi_a), rng.randint(lo_b, hi_b)
    if op == "-" and b > a:
        a, b = b, a
    return a, b


def arithmetic(rng: random.Random, difficulty: int) -> Problem:
    """A bare expression such as ``What is 47 + 38?``."""
    op = rng.choice(_OPS[difficulty])
    a, b = _operands(rng, op, difficulty)
    phrasing = rng.choice(("What is {e}?", "Compute {e}.", "Calculate {e}.", "{e} = ?"))
    step, answer = worked_step(a, op, b)
    return Problem(
        key=op_key(op, a, b),
        question=phrasing.format(e=f"{a} {op} {b}"),
        steps=(step,),
        answer=answer,
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
    """A short story problem: one step, or two at difficulty 3."""
    two_step = difficulty == 3
    level = 1 if two_step else difficulty
    op = rng.choice(_OPS[level])
    a, b = _operands(rng, op, level)
    words = dict(name=rng.choice(NAMES), item=rng.choice(ITEMS), box=rng.choice(CONTAINERS))
    story, key = _ONE_STEP[op].format(a=a, b=b, **words), op_key(op, a, b)
    step, answer = worked_step(a, op, b)
    steps, ops = [step], [key]
    if two_step:
        op2 = rng.choice("+-")
        c = rng.randint(10, 99)
        c = min(c, answer) if op2 == "-" else c
        story += " " + _SECOND[op2].format(c=c, **words)
        key = f"({key}){op2}{c}"
        ops.append(op_key(op2, answer, c))
        step, answer = worked_step(answer, op2, c)
        steps.append(step)
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
