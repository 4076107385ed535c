"""The code verifier: run model-written code against the sample's tests in the sandbox.

HumanEval style: the program is `prompt + completion + tests + check(entry_point)`. When
the completion holds a fenced code block, that block is used; when it defines the entry
point itself, it replaces the prompt instead of continuing it. A completion that does not
compile is unparseable; one that compiles scores 1.0 if every test passes, else 0.0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from llmforge.sandbox import Limits, run_many
from llmforge.verifiers.answer import answer_text
from llmforge.verifiers.base import Reward, Score, register

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


def completion_code(completion: str) -> str:
    """The code in a completion: the last fenced block after the reasoning, else all of it."""
    text = answer_text(completion)
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


def build_program(completion: str, sample: Mapping) -> str:
    """The full test program for one completion (see the module docstring)."""
    code = completion_code(completion)
    entry = sample.get("entry_point")
    prompt = sample.get("prompt", "") if isinstance(sample.get("prompt"), str) else ""
    defines_entry = entry and re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.M)
    head = code if defines_entry else prompt + code
    tests = sample.get("tests") or ""
    call = f"\n\ncheck({entry})\n" if entry and "def check(" in tests else "\n"
    return f"{head}\n\n{tests}{call}"


def _compiles(program: str) -> bool:
    try:
        compile(program, "main.py", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


@register("code")
class CodeTests(Reward):
    """Pass/fail of the sample's tests, run in `llmforge.sandbox` with a small worker pool."""

    def __init__(
        self, timeout_s: float = 10.0, cpu_s: int = 5, memory_mb: int = 1024, workers: int = 4
    ):
        self.limits = Limits(wall_s=timeout_s, cpu_s=cpu_s, memory_mb=memory_mb)
        self.workers = workers

    def __call__(self, completion: str, sample: Mapping, length: int | None = None) -> Score:
        return self.batch([completion], [sample])[0]

    def batch(self, completions: Sequence[str], samples: Sequence[Mapping], lengths=None):
        programs = [build_program(c, s) for c, s in zip(completions, samples, strict=True)]
        runnable = [i for i, p in enumerate(programs) if _compiles(p)]
        results = run_many([programs[i] for i in runnable], self.limits, self.workers)
        scores = [Score(0.0, parseable=False)] * len(programs)
        for i, result in zip(runnable, results, strict=True):
            scores[i] = Score(1.0 if result.passed else 0.0, parseable=True)
        return scores
