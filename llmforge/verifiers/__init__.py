"""Verifiers and rewards, shared by eval and post-training: plugins built by name.

`combine({"correct": 1.0, "format": 0.1, "overlong": 1.0})` gives one reward whose `batch`
scores a list of completions; see docs/rewards.md for every reward and its options.
"""

from llmforge.verifiers import answer, code, dispatch, form, ifeval, judge  # noqa: F401 (registers)
from llmforge.verifiers.answer import extract_answer, last_boxed
from llmforge.verifiers.base import REGISTRY, Reward, Score, Weighted, build, combine, register
from llmforge.verifiers.form import overlong_penalty

__all__ = [
    "REGISTRY",
    "Reward",
    "Score",
    "Weighted",
    "build",
    "combine",
    "extract_answer",
    "last_boxed",
    "overlong_penalty",
    "register",
]
