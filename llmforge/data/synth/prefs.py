"""Preference pairs for DPO: a correct worked answer against a weak solver's answer.

The rejected answer works the same columns but slips in the last column of the last
operation, the way a weak model does (a wrong single-digit fact, a forgotten carry or
borrow), and carries on consistently from the mistake to a wrong boxed answer. Chosen and rejected
differ in a column fact the model has seen many times, so the preference is learnable:
the model has to check the arithmetic of each column.
"""

from __future__ import annotations

import random
import re

from llmforge.data.synth.problems import Problem, Slip, worked_step

_OPERATION = re.compile(r"^(\d+)([-+*])(\d+): ")


def slips(a: int, op: str, b: int) -> list[Slip]:
    """The slips in the last column of ``a op b`` that change its result: the column off by
    one either way, or its carry (borrow) forgotten.

    Only the last column, so chosen and rejected differ from the slip to the end and in
    nothing else: a slip in an earlier column would make every later column of the
    rejected answer a correct computation from a wrong carry, and DPO would push those
    correct computations down along with the mistake."""
    last = (len(str(a)) if op == "*" else max(len(str(a)), len(str(b)))) - 1
    options = [Slip(last, 1), Slip(last, -1), Slip(last, drop_carry=True)]
    right = worked_step(a, op, b)[1]
    return [s for s in options if worked_step(a, op, b, s)[1] != right]


def wrong_solution(problem: Problem, rng: random.Random) -> tuple[str, int]:
    """The worked solution with a slip in its last operation; returns (text, wrong answer)."""
    *head, last = problem.steps
    match = _OPERATION.match(last)
    if match is None:  # every generated step starts "a op b: "; guard anyway
        raise ValueError(f"unexpected step format: {last!r}")
    a, op, b = int(match[1]), match[2], int(match[3])
    step, wrong = worked_step(a, op, b, rng.choice(slips(a, op, b)))
    return " ".join([*head, step]) + f" The answer is \\boxed{{{wrong}}}.", wrong


def preference_rows(problems: list[Problem], rng: random.Random) -> list[dict]:
    """One DPO row per problem: chosen is correct, rejected carries a column slip."""
    rows = []
    for i, problem in enumerate(problems):
        rejected, _ = wrong_solution(problem, rng)
        rows.append(
            {
                "id": f"dpo-{i:06d}",
                "prompt": problem.question,
                "chosen": problem.solution(),
                "rejected": rejected,
            }
        )
    return rows
