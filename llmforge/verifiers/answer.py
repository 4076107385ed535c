"""Answer extraction and the answer verifiers: math (math-verify), exact and numeric match.

The final answer is the last `\\boxed{...}` after the reasoning (text after the last
`</think>` when there is one); failing that, the last number in that text. Each verifier
scores 1.0 for a correct answer and 0.0 otherwise, and reports `parseable=False` when no
answer could be extracted.
"""

from __future__ import annotations

import re
import threading
from abc import abstractmethod
from collections.abc import Mapping
from fractions import Fraction

from llmforge.verifiers.base import Reward, Score, register

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def answer_text(completion: str) -> str:
    """The part of a completion after its reasoning block."""
    return completion.rsplit("</think>", 1)[-1]


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` in `text`, nested braces included; None if absent."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i = start + len("\\boxed{")
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None  # unbalanced: the box was cut off


def extract_answer(completion: str, fallback_number: bool = True) -> str | None:
    """The final answer: the last boxed expression, else (optionally) the last number."""
    text = answer_text(completion)
    boxed = last_boxed(text)
    if boxed:
        return boxed
    if fallback_number:
        numbers = _NUMBER.findall(text)
        if numbers:
            return numbers[-1]
    return None


def to_number(text: str) -> Fraction | float | None:
    """Read `3`, `-1,234.5`, `$12`, `3/4`, `50%`-less numbers; None if not a plain number."""
    cleaned = text.strip().strip("$").replace(",", "").replace("\\!", "").strip()
    cleaned = re.sub(r"^\\(?:d?frac)\{(-?\d+)\}\{(\d+)\}$", r"\1/\2", cleaned)
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        try:
            return float(cleaned)
        except ValueError:
            return None


class _AnswerReward(Reward):
    """Shared shape: extract an answer, compare it with `sample["reference"]`."""

    def __init__(self, fallback_number: bool = True):
        self.fallback_number = fallback_number

    def __call__(self, completion: str, sample: Mapping, length: int | None = None) -> Score:
        answer = extract_answer(completion, self.fallback_number)
        if answer is None:
            return Score(0.0, parseable=False)
        reference = sample.get("reference")
        if reference is None:
            return Score(0.0, parseable=True)
        return Score(1.0 if self.matches(answer, str(reference)) else 0.0, parseable=True)

    @abstractmethod
    def matches(self, answer: str, reference: str) -> bool:
        """Whether the extracted answer equals the reference."""


@register("exact")
class ExactMatch(_AnswerReward):
    """String equality after trimming and collapsing whitespace."""

    def matches(self, answer: str, reference: str) -> bool:
        return " ".join(answer.split()) == " ".join(reference.split())


@register("numeric")
class NumericMatch(_AnswerReward):
    """Numbers equal within a relative tolerance; fractions compare exactly."""

    def __init__(self, fallback_number: bool = True, rel_tol: float = 1e-6):
        super().__init__(fallback_number)
        self.rel_tol = rel_tol

    def matches(self, answer: str, reference: str) -> bool:
        a, b = to_number(answer), to_number(reference)
        if a is None or b is None:
            return False
        return abs(float(a) - float(b)) <= self.rel_tol * max(1.0, abs(float(b)))


@register("math")
class MathVerify(_AnswerReward):
    """Symbolic equivalence with HuggingFace math-verify (`1/2` == `0.5` == `\\frac{1}{2}`)."""

    def matches(self, answer: str, reference: str) -> bool:
        from math_verify import parse, verify

        # math-verify times out with SIGALRM, which only works in the main thread.
        timeout = 5 if threading.current_thread() is threading.main_thread() else None
        gold = parse(f"\\boxed{{{reference}}}", parsing_timeout=timeout)
        pred = parse(f"\\boxed{{{answer}}}", parsing_timeout=timeout)
        if not gold or not pred:
            return ExactMatch().matches(answer, reference)
        return bool(verify(gold, pred, timeout_seconds=timeout))
