"""Dynamic sampling, the difficulty filter, the pass-rate histogram and temperature decay."""

import pytest

from llmforge.post.rl_sampling import (
    difficulty_filter,
    dynamic_sample,
    informative,
    pass_rate_histogram,
    temperature_at,
)


def make_source(reward_lists):
    """draw(n) hands out the next n synthetic groups, each labelled by its index."""
    state = {"next": 0}

    def draw(n):
        out = list(range(state["next"], min(state["next"] + n, len(reward_lists))))
        state["next"] += n
        return out

    def score(groups):
        return [reward_lists[g] for g in groups]

    return draw, score


def test_informative():
    assert not informative([1.0, 1.0, 1.0]) and informative([1.0, 0.0])


def test_dynamic_sampling_drops_uniform_groups_and_refills():
    rewards = [[1, 1], [0, 1], [0, 0], [1, 0], [0, 0], [1, 0], [0, 1]]
    draw, score = make_source(rewards)
    kept, stats = dynamic_sample(draw, score, batch_groups=3, max_rounds=5)
    assert [g for g, _ in kept] == [1, 3, 5]
    assert stats["groups_kept"] == 3 and stats["groups_drawn"] == 6 and stats["sample_rounds"] == 3
    assert stats["kept_fraction"] == pytest.approx(0.5)


def test_dynamic_sampling_gives_up_after_max_rounds():
    draw, score = make_source([[1, 1]] * 20)
    kept, stats = dynamic_sample(draw, score, batch_groups=2, max_rounds=3)
    assert kept == [] and stats["sample_rounds"] == 3 and stats["groups_drawn"] == 6


def test_dynamic_sampling_off_keeps_everything_in_one_round():
    draw, score = make_source([[1, 1], [0, 0], [0, 1]])
    kept, stats = dynamic_sample(draw, score, batch_groups=2, max_rounds=5, enabled=False)
    assert [g for g, _ in kept] == [0, 1] and stats["sample_rounds"] == 1


def test_difficulty_filter_interval_is_open_closed():
    rates = [0.0, 0.125, 0.5, 0.8, 0.875, 1.0]
    assert difficulty_filter(rates, 0.0, 0.8) == [1, 2, 3]
    assert difficulty_filter(rates, 0.2, 1.0) == [2, 3, 4, 5]


def test_pass_rate_histogram():
    hist = pass_rate_histogram([0.0, 0.0, 0.1, 0.2, 0.5, 1.0], bins=5)
    assert hist == {
        "0": 2,
        "(0.0,0.2]": 2,
        "(0.2,0.4]": 0,
        "(0.4,0.6]": 1,
        "(0.6,0.8]": 0,
        "(0.8,1.0]": 1,
    }
    assert sum(hist.values()) == 6


def test_temperature_decay():
    assert temperature_at(0, 11, 1.0, 0.5) == 1.0
    assert temperature_at(5, 11, 1.0, 0.5) == pytest.approx(0.75)
    assert temperature_at(10, 11, 1.0, 0.5) == pytest.approx(0.5)
    assert temperature_at(7, 11, 0.9, None) == 0.9
