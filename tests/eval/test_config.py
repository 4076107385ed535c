"""The eval config's device: `auto` follows this rank's device, explicit choices stay."""

import pytest
import torch

from llmforge import distributed
from llmforge.errors import ConfigError
from llmforge.eval.config import Config, build_plan


def test_auto_device_is_this_ranks_and_explicit_ones_are_kept(monkeypatch):
    assert Config().device == "auto"
    assert build_plan(Config()).device == "cpu"  # no GPU here
    monkeypatch.setattr(distributed, "device", lambda: torch.device("cuda", 1))  # a GPU rank
    assert build_plan(Config()).device == "cuda:1"
    assert build_plan(Config(device="cpu")).device == "cpu"
    assert build_plan(Config(device="cuda:0")).device == "cuda:0"


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "CPU", ""])
def test_a_device_torch_would_not_know_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="'device'"):
        Config(device=bad)
