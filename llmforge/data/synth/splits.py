"""Hash partition of the problem space into train, RL and held-out eval splits.

A problem's split depends only on a hash of its canonical key (the computation, such as
``(12+7)-5``), not on the seed or on its wording. So every eval item is held out of every
training file by construction, for any seed and any preset: a word problem and a bare
expression with the same computation always land in the same split.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator

from llmforge.data.synth.problems import Problem, make_problem

# Percent of the key space per split: 10% eval, 10% RL prompts, 80% training data.
SPLITS = {"eval": range(0, 10), "rl": range(10, 20), "train": range(20, 100)}
# Consecutive rejected draws after which the requested space counts as exhausted.
_MAX_MISSES = 5_000


def split_of(key: str) -> str:
    """The split ('train', 'rl' or 'eval') a canonical problem key belongs to."""
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 100
    return next(name for name, buckets in SPLITS.items() if bucket in buckets)


def leaks_eval(keys: list[str]) -> bool:
    """True when any of these operation keys is a held-out eval item."""
    return any(split_of(key) == "eval" for key in keys)


def belongs(problem: Problem, split: str) -> bool:
    """Whether `problem` may go into `split`.

    Outside the eval split a problem must also not work out an eval item on the way: a
    step ``52 - 40 = 12`` would hand the model the answer to the eval item ``52 - 40``.
    """
    if split_of(problem.key) != split:
        return False
    return split == "eval" or not leaks_eval(problem.operation_keys())


def sample(
    rng: random.Random,
    split: str,
    n: int,
    difficulty: Callable[[random.Random], int] | int,
    *,
    unique: str = "question",
    exclude: set[str] | None = None,
) -> list[Problem]:
    """Draw `n` distinct problems of `split`.

    `difficulty` is a level or a function drawing one. `unique` is 'question' (distinct
    texts; the same computation may recur in other words) or 'key' (distinct computations).
    Keys in `exclude` are skipped. Raises ValueError when the space runs dry.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    return list(_draw(rng, split, n, difficulty, unique, exclude or set()))


def _draw(rng, split, n, difficulty, unique, exclude) -> Iterator[Problem]:
    seen: set[str] = set()
    misses, made = 0, 0
    while made < n:
        level = difficulty(rng) if callable(difficulty) else difficulty
        problem = make_problem(rng, level)
        tag = problem.key if unique == "key" else problem.question
        if not belongs(problem, split) or tag in seen or problem.key in exclude:
            misses += 1
            if misses > _MAX_MISSES:
                raise ValueError(f"could not draw {n} distinct {split} problems; got {made}")
            continue
        misses = 0
        seen.add(tag)
        made += 1
        yield problem


def mixed_difficulty(weights: tuple[float, float, float] = (0.3, 0.4, 0.3)):
    """A difficulty sampler with the given weights for levels 1, 2, 3."""

    def draw(rng: random.Random) -> int:
        return rng.choices((1, 2, 3), weights=weights)[0]

    return draw
