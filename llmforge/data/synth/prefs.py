"""Preference pairs for DPO: a correct worked answer against a plausible wrong one.

The rejected answer repeats the chosen steps but slips on the last one, the way a weak
model does (a dropped carry, an off-by-one, a swapped digit), so the preference is
learnable: the model has to check the arithmetic of the final step.
"""

from __future__ import annotations

import random
import re

from llmforge.data.synth.problems import Problem

_LAST_STEP = re.compile(r"^(.* = )(-?\d+)\.$")


def slip(value: int, rng: random.Random) -> int:
    """A plausible wrong value near `value`: off by 1, 2 or 10, a lost carry or swapped digits."""
    digits = str(abs(value))
    options = [value + 1, value - 1, value + 10, value - 10, value + 2]
    if len(digits) >= 2 and digits[-1] != digits[-2]:
        swapped = digits[:-2] + digits[-1] + digits[-2]
        options.append(int(swapped) * (1 if value >= 0 else -1))
    if len(digits) >= 3:
        options.append(value - 100)
    options = [v for v in options if v != value and v >= 0]
    return rng.choice(options)


def wrong_solution(problem: Problem, rng: random.Random) -> tuple[str, int]:
    """The worked solution with a slip in its last step; returns (text, wrong answer)."""
    *head, last = problem.steps
    match = _LAST_STEP.match(last)
    if match is None:  # every generated step has the form "x op y = z."; guard anyway
        raise ValueError(f"unexpected step format: {last!r}")
    wrong = slip(problem.answer, rng)
    steps = [*head, f"{match.group(1)}{wrong}."]
    return " ".join(steps) + f" The answer is \\boxed{{{wrong}}}.", wrong


def preference_rows(problems: list[Problem], rng: random.Random) -> list[dict]:
    """One DPO row per problem: chosen is correct, rejected carries a final-step slip."""
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
