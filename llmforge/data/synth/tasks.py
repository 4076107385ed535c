"""Tasks in the task schema: RL prompts with references and held-out eval sets.

`heldout_arithmetic_tasks` is the public helper other parts (the eval stage) reuse to
make held-out arithmetic tasks of a chosen difficulty. Held-out tasks come from the
'eval' split of `splits.py`, so no training file built here contains them.
"""

from __future__ import annotations

import random

from llmforge.data.synth.problems import Problem
from llmforge.data.synth.splits import sample

MODES = ("think", "no_think")


def task_row(row_id: str, prompt: str, reference: str, verifier: str) -> dict:
    """A row of the task schema (docs/contract.md) for a chat model."""
    return {
        "id": row_id,
        "prompt": prompt,
        "reference": reference,
        "tests": None,
        "verifier": verifier,
        "chat": True,
    }


def math_tasks(
    problems: list[Problem], prefix: str, *, modes: tuple[str, ...] = (), solutions: bool = False
) -> list[dict]:
    """Tasks verified by the math verifier against the integer answer.

    `modes` are given to the rows in turn (the eval stage passes a row's `mode` to the chat
    template); `solutions` adds the gold worked answer as `solution`, in the no_think form
    of the SFT data, for DPO pairs of the gold answer over the model's own.
    """
    rows = []
    for i, p in enumerate(problems):
        row = task_row(f"{prefix}-{i:05d}", p.question, str(p.answer), "math")
        if modes:
            row["mode"] = modes[i % len(modes)]
        if solutions:
            row["solution"] = p.solution()
        rows.append(row)
    return rows


def format_tasks(problems: list[Problem], prefix: str = "eval-format") -> list[dict]:
    """Format-compliance tasks, alternating think and no_think.

    `reference` holds the mode to request (pass it as the chat template's
    `enable_thinking`). A compliant think answer has a non-empty think block, a compliant
    no_think answer an empty one, and both end with ``\\boxed{...}``.
    """
    return [
        task_row(f"{prefix}-{i:05d}", p.question, MODES[i % 2], "format")
        for i, p in enumerate(problems)
    ]


def heldout_arithmetic_tasks(
    n: int, difficulty: int = 2, *, seed: int = 0, prefix: str = "heldout"
) -> list[dict]:
    """`n` held-out math tasks (distinct computations) at `difficulty` 1-3.

    Items come from the eval split, so they never occur in data built by
    `llmforge.data.tiny` with any seed. The same (n, difficulty, seed) gives the same tasks.
    """
    rng = random.Random(f"heldout-{difficulty}-{seed}")
    return math_tasks(sample(rng, "eval", n, difficulty, unique="key"), f"{prefix}-d{difficulty}")


def heldout_format_tasks(
    n: int, difficulty: int = 1, *, seed: int = 0, prefix: str = "heldout-format"
) -> list[dict]:
    """`n` held-out think/no_think format tasks (see `format_tasks`), alternating modes."""
    rng = random.Random(f"heldout-format-{difficulty}-{seed}")
    return format_tasks(sample(rng, "eval", n, difficulty, unique="key"), prefix)
