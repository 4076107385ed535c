"""Proposals: the Dirichlet prior is centred on natural shares and respects caps and epochs."""

import numpy as np
import pytest

from llmforge.errors import BadInput
from llmforge.regmix import proposals as props

TOKENS = {"a": 60_000, "b": 30_000, "c": 10_000}


def prior(budget=10_000, caps=None, max_epochs=100.0, concentration=(50.0,)):
    return props.make_prior(TOKENS, budget, list(concentration), max_epochs, caps or {})


def test_samples_are_mixtures_centred_on_natural_shares():
    x = props.sample(prior(), 4000, np.random.default_rng(0))
    assert x.shape == (4000, 3)
    assert np.allclose(x.sum(axis=1), 1) and (x >= 0).all()
    assert np.allclose(x.mean(axis=0), [0.6, 0.3, 0.1], atol=0.01)


def test_small_concentration_spreads_samples_more():
    rng = np.random.default_rng(0)
    wide = props.sample(prior(concentration=(0.3,)), 2000, rng)
    narrow = props.sample(prior(concentration=(30.0,)), 2000, rng)
    assert wide.std(axis=0).min() > 2 * narrow.std(axis=0).max()


def test_caps_and_epoch_limits_hold_for_every_sample():
    # c has 10k tokens: with a 20k budget and 1 epoch it may take at most half the tokens.
    p = prior(budget=20_000, caps={"a": 0.7}, max_epochs=1.0, concentration=(0.3, 1.0))
    assert p.upper.tolist() == pytest.approx([0.7, 1.0, 0.5])
    x = props.sample(p, 5000, np.random.default_rng(1))
    assert (x <= p.upper + 1e-9).all()


def test_infeasible_limits_and_unknown_domains_are_bad_input():
    with pytest.raises(BadInput, match="no mixture fits"):
        prior(caps={"a": 0.2, "b": 0.2, "c": 0.2})
    with pytest.raises(BadInput, match="unknown domain"):
        prior(caps={"poetry": 0.5})


def test_projection_stays_within_caps_and_sums_to_one():
    w = props.project(np.array([0.9, 0.05, 0.05]), np.array([0.5, 1.0, 0.3]))
    assert w.sum() == pytest.approx(1) and (w <= [0.5 + 1e-12, 1, 0.3 + 1e-12]).all()
    assert w[0] == pytest.approx(0.5)


def test_as_dict_rounds_and_keeps_the_sum():
    d = props.as_dict(["a", "b", "c"], np.array([1 / 3, 1 / 3, 1 / 3]), digits=3)
    assert sum(d.values()) == pytest.approx(1, abs=1e-12)
