"""Answer extraction and the answer verifiers: math (math-verify), exact and numeric match.

A final answer counts only in the form the task asks for (`answer_form`):

- `boxed`: the last `\\boxed{...}` after the reasoning (the text after the last
  `</think>`). Math tasks and chat rows ask for this: our data and chat template end every
  verifiable answer with it (docs/contract.md). A number elsewhere in the text is not an
  answer.
- `plain`: the answer itself, as the first line of the text after the reasoning (or a
  boxed one, which is never ambiguous). A plain completion (`chat: false`) checked by
  `numeric` or `exact` asks for this, the form the eval's gold-answer loss scores too
  (`llmforge.eval.answer_loss`); `numeric` needs that whole line to read as a number.

A think-mode sample (`mode: think`) whose completion never closes its reasoning gave no
answer. Each verifier scores 1.0 for a correct answer and 0.0 otherwise, and reports
`parseable=False` when there is no answer in the asked form, so the RL loop's masking of
unparseable trajectories means what it says.
"""

from __future__ import annotations

import re
import threading
from abc import abstractmethod
from collections.abc import Mapping
from fractions import Fraction

from llmforge.errors import BadInput
from llmforge.verifiers.base import Reward, Score, register

FORMS = ("auto", "boxed", "plain")


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


def extract_answer(completion: str, form: str = "boxed") -> str | None:
    """The final answer in `form` ('boxed' or 'plain', see the module docstring), or None."""
    text = answer_text(completion)
    boxed = last_boxed(text)
    if boxed or form != "plain":
        return boxed or None
    return text.strip().split("\n", 1)[0].strip() or None


def answer_form(sample: Mapping, verifier: str, option: str = "auto") -> str:
    """The form `sample` asks its answer in: boxed for math and chat rows, else plain."""
    if option != "auto":
        return option
    return "boxed" if verifier == "math" or sample.get("chat", True) else "plain"


def unfinished_reasoning(completion: str, sample: Mapping) -> bool:
    """A think-mode completion that never closed its reasoning block."""
    return sample.get("mode") == "think" and "</think>" not in completion


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
    """Shared shape: extract an answer in the asked form, compare it with the reference.

    `form`: 'auto' (the task's form, see `answer_form`), or 'boxed' / 'plain' for every row.
    """

    def __init__(self, form: str = "auto"):
        if form not in FORMS:
            raise BadInput(f"{self.name}: form must be one of {FORMS}, got {form!r}")
        self.form = form

    def __call__(self, completion: str, sample: Mapping, length: int | None = None) -> Score:
        form = answer_form(sample, self.name, self.form)
        answer = (
            None if unfinished_reasoning(completion, sample) else extract_answer(completion, form)
        )
        if answer is None or not self.readable(answer):
            return Score(0.0, parseable=False)
        reference = sample.get("reference")
        if reference is None:
            return Score(0.0, parseable=True)
        return Score(1.0 if self.matches(answer, str(reference)) else 0.0, parseable=True)

    def readable(self, answer: str) -> bool:
        """Whether the extracted text is an answer this verifier can judge at all."""
        return True

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

    def __init__(self, form: str = "auto", rel_tol: float = 1e-6):
        super().__init__(form)
        self.rel_tol = rel_tol

    def readable(self, answer: str) -> bool:
        return to_number(answer) is not None

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
