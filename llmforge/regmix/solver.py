"""Solve the fitted regression for the best mixture: score many prior samples, average the
top k (RegMix's recipe; the mean of the best k is steadier than the single argmin of a
piecewise-constant tree model).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from llmforge.regmix.proposals import Prior, sample

CHUNK = 50_000  # samples scored at once, to bound memory at large `samples`


def solve(
    predict: Callable[[np.ndarray], np.ndarray],
    prior: Prior,
    samples: int,
    top_k: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(mixture, its k best samples): the mean of the `top_k` lowest-predicted samples."""
    best_x = np.zeros((0, len(prior.domains)))
    best_y = np.zeros(0)
    for start in range(0, samples, CHUNK):
        x = sample(prior, min(CHUNK, samples - start), rng)
        y = predict(x)
        best_x, best_y = np.concatenate([best_x, x]), np.concatenate([best_y, y])
        keep = np.argsort(best_y, kind="stable")[:top_k]
        best_x, best_y = best_x[keep], best_y[keep]
    mixture = best_x.mean(axis=0)
    return mixture / mixture.sum(), best_x
