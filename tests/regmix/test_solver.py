"""Regression and solver: on a synthetic response surface with a planted optimum, the fitted
models rank held-out mixtures well and the solver finds the optimum."""

import numpy as np
import pytest

from llmforge.regmix import proposals as props
from llmforge.regmix import regression, solver
from llmforge.regmix.config import FitConfig

OPTIMUM = np.array([0.2, 0.5, 0.3])


def surface(x: np.ndarray) -> np.ndarray:
    """A loss-like bowl: lowest at OPTIMUM (cross-entropy of OPTIMUM against x)."""
    return -(OPTIMUM * np.log(x + 1e-3)).sum(axis=1)


def flat_prior(upper=(1.0, 1.0, 1.0)):
    tokens = {"a": 1000, "b": 1000, "c": 1000}
    p = props.make_prior(tokens, 1, [1.0, 3.0], 1e9, {})
    return props.Prior(p.domains, p.natural, p.concentration, np.array(upper))


def proxies(n=48, seed=0):
    x = props.sample(flat_prior(), n, np.random.default_rng(seed))
    noise = np.random.default_rng(seed + 1).normal(0, 0.005, n)
    return x, surface(x) + noise


def test_solver_finds_the_planted_optimum_of_the_true_surface():
    mix, best = solver.solve(surface, flat_prior(), 100_000, 50, np.random.default_rng(0))
    assert mix == pytest.approx(OPTIMUM, abs=0.03)
    assert best.shape == (50, 3)


@pytest.mark.parametrize("model", ["linear", "lightgbm"])
def test_fitted_models_rank_well_and_lead_the_solver_to_the_optimum(model):
    x, y = proxies(n=48 if model == "linear" else 160)  # trees need more points
    fit = regression.fit(x, y, FitConfig(model=model, folds=4))
    assert fit.name == model and set(fit.quality) == {"linear", "lightgbm"}
    assert fit.quality[model]["spearman"] > (0.9 if model == "linear" else 0.6)
    assert len(fit.cv_predictions[model]) == len(y)
    mix, _ = solver.solve(fit.predict, flat_prior(), 20_000, 100, np.random.default_rng(2))
    tolerance = 0.05 if model == "linear" else 0.12  # trees are piecewise constant
    assert mix == pytest.approx(OPTIMUM, abs=tolerance)
    assert surface(mix[None])[0] < surface(np.full((1, 3), 1 / 3))[0]


def test_auto_picks_the_model_with_the_better_cross_validated_rho():
    x, y = proxies()
    fit = regression.fit(x, y, FitConfig(folds=4))
    best = max(fit.quality, key=lambda m: fit.quality[m]["spearman"])
    assert fit.name == best


def test_solver_respects_the_caps_of_its_prior():
    capped = flat_prior(upper=(1.0, 0.35, 1.0))  # the optimum wants 0.5 of b
    mix, best = solver.solve(surface, capped, 20_000, 50, np.random.default_rng(0))
    assert (best[:, 1] <= 0.35 + 1e-9).all() and mix[1] <= 0.35 + 1e-9
    assert mix[1] == pytest.approx(0.35, abs=0.03)


def test_quality_of_a_perfect_and_a_reversed_prediction():
    y = np.arange(10.0)
    assert regression.quality(y, y) == pytest.approx({"spearman": 1.0, "mae": 0.0})
    assert regression.quality(y, -y)["spearman"] == pytest.approx(-1.0)
