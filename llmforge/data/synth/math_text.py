"""Pretraining-style math documents: a few worked problems per document, domain ``math``."""

from __future__ import annotations

import random

from llmforge.data.synth.problems import Problem

_HEADERS = ("Practice problems.", "Worked examples.", "Exercises with solutions.", "Math drill.")


def render_problem(problem: Problem, number: int) -> str:
    """One problem as ``Problem N: ...`` followed by its worked solution."""
    return f"Problem {number}: {problem.question}\nSolution: {problem.solution()}"


def math_documents(
    problems: list[Problem], rng: random.Random, *, per_doc: tuple[int, int] = (3, 8)
) -> list[dict]:
    """Group `problems` (in order) into documents of `per_doc` problems each."""
    docs, start = [], 0
    while start < len(problems):
        count = rng.randint(*per_doc)
        group = problems[start : start + count]
        body = "\n\n".join(render_problem(p, i + 1) for i, p in enumerate(group))
        text = f"{rng.choice(_HEADERS)}\n\n{body}\n"
        docs.append({"id": f"math-{len(docs):06d}", "text": text, "domain": "math"})
        start += count
    return docs
