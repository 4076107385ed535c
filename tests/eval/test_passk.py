"""pass@k against brute-force enumeration over all k-subsets; avg@k by hand."""

import itertools

import pytest

from llmforge.errors import BadInput
from llmforge.eval.passk import avg_at_k, mean_pass_at_k, pass_at_k


def brute_force(n: int, c: int, k: int) -> float:
    answers = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(answers[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12)


def test_pass_at_1_is_fraction_correct_and_large_n_is_stable():
    assert pass_at_k(200, 37, 1) == pytest.approx(37 / 200)
    value = pass_at_k(10_000, 3, 100)
    assert 0.0 < value < 1.0 and value == pytest.approx(1 - (1 - 100 / 10_000) ** 3, rel=1e-3)


def test_mean_and_avg():
    correct = [[True, False, False, False], [False] * 4, [True] * 4]
    assert mean_pass_at_k(correct, 1) == pytest.approx((0.25 + 0 + 1) / 3)
    assert mean_pass_at_k(correct, 4) == pytest.approx((1 + 0 + 1) / 3)
    assert avg_at_k([[True, False], [True, True, True, False]]) == pytest.approx((0.5 + 0.75) / 2)


def test_bad_arguments():
    for args in [(3, 4, 1), (3, 1, 0), (3, 1, 4), (3, -1, 1)]:
        with pytest.raises(BadInput):
            pass_at_k(*args)
    with pytest.raises(BadInput):
        avg_at_k([[]])
