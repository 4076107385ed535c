"""Mixtures: reading mixture artifacts, weight checks and multi-stage step boundaries."""

import json

import numpy as np
import pytest

from llmforge.config import from_dict
from llmforge.data.mixture import (
    MixtureStage,
    natural_weights,
    read_mixture,
    stage_ends,
    total_steps_for,
    weight_vector,
)
from llmforge.errors import BadInput, ConfigError


def test_read_mixture_artifact(tmp_path):
    (tmp_path / "mixture.json").write_text(json.dumps({"weights": {"code": 0.25, "math": 0.75}}))
    assert read_mixture(tmp_path) == {"code": 0.25, "math": 0.75}


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"weights": {"code": 0.5}}, "sum to 1"),
        ({"weights": {"code": -1, "math": 2}}, ">= 0"),
        ({"w": {}}, "weights"),
    ],
)
def test_read_mixture_rejects_bad_files(tmp_path, payload, message):
    (tmp_path / "mixture.json").write_text(json.dumps(payload))
    with pytest.raises(BadInput, match=message):
        read_mixture(tmp_path)


def test_read_mixture_names_the_line_of_bad_json(tmp_path):
    (tmp_path / "mixture.json").write_text('{\n"weights": {,}\n}')
    with pytest.raises(BadInput, match=r"mixture.json:2"):
        read_mixture(tmp_path)


def test_weight_vector_orders_normalises_and_rejects_unknown_domains():
    vec = weight_vector({"b": 0.5, "a": 0.5}, ["a", "b", "c"])
    np.testing.assert_allclose(vec, [0.5, 0.5, 0.0])
    with pytest.raises(BadInput, match="unknown domain"):
        weight_vector({"z": 1.0}, ["a"])


def test_natural_weights_follow_token_counts():
    assert natural_weights({"a": 30, "b": 10}) == {"a": 0.75, "b": 0.25}


def test_stage_config_checks_the_sum():
    with pytest.raises(ConfigError, match="sum to 1"):
        from_dict(MixtureStage, {"weights": {"a": 0.3}})


def test_stage_ends_follow_token_budgets():
    stages = [MixtureStage(tokens=1000), MixtureStage(tokens=550), MixtureStage(tokens=0)]
    assert stage_ends(stages, 100, total_steps=30) == [10, 16, 30]
    assert total_steps_for(stages[:2], 100) == 16
    with pytest.raises(BadInput, match="only the last stage"):
        stage_ends(stages[::-1], 100, 30)
