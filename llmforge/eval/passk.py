"""Pass@k and avg@k from n sampled answers per problem (Chen et al. 2021, Codex paper).

pass@k = 1 - C(n-c, k) / C(n, k): the chance that at least one of k answers drawn without
replacement from the n sampled (c of them correct) is correct. It is computed in the
product form 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms huge binomials.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmforge.errors import BadInput


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with `n` samples of which `c` are correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise BadInput(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_pass_at_k(correct: Sequence[Sequence[bool]], k: int) -> float:
    """pass@k averaged over problems; `correct[p]` holds the verdicts of problem p's samples."""
    if not correct:
        raise BadInput("pass@k over zero problems")
    return sum(pass_at_k(len(v), sum(map(bool, v)), k) for v in correct) / len(correct)


def avg_at_k(correct: Sequence[Sequence[bool]]) -> float:
    """avg@k: the mean accuracy over all k samples of all problems (each problem weighs 1)."""
    if not correct or any(len(v) == 0 for v in correct):
        raise BadInput("avg@k needs at least one sample for every problem")
    return sum(sum(map(bool, v)) / len(v) for v in correct) / len(correct)
