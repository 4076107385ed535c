"""Config loading: YAML with line numbers, --set overrides, type checks, did-you-mean."""

from dataclasses import dataclass
from typing import Literal

import pytest

from llmforge import config
from llmforge.config import check, param
from llmforge.errors import BadInput, ConfigError


@dataclass(frozen=True)
class Optim:
    lr: float = param(3e-4, "learning rate")
    betas: tuple[float, ...] = param((0.9, 0.95), "adam betas")

    def __post_init__(self):
        check(self.lr > 0, "lr", "must be > 0")


@dataclass(frozen=True)
class Cfg:
    steps: int = param(10, "steps")
    name: str = param("x", "name")
    loss: Literal["sigmoid", "ipo"] = param("sigmoid", "loss")
    weights: dict[str, float] = param({"a": 1.0}, "mixture")
    optim: Optim = param(Optim(), "optimizer")
    tag: str | None = param(None, "optional tag")


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_yaml_and_sets_merge(tmp_path):
    p = write(tmp_path, "steps: 5\noptim:\n  lr: 0.01\n")
    cfg = config.load(Cfg, p, ["optim.betas=[0.8, 0.9]", "name=run1", "tag=t"])
    assert cfg.steps == 5 and cfg.optim.lr == 0.01 and cfg.optim.betas == (0.8, 0.9)
    assert cfg.name == "run1" and cfg.tag == "t"
    assert config.from_dict(Cfg, config.to_dict(cfg)) == cfg


def test_unknown_key_names_file_line_and_suggestion(tmp_path):
    p = write(tmp_path, "steps: 5\noptim:\n  lrr: 0.01\n")
    with pytest.raises(ConfigError) as e:
        config.load(Cfg, p)
    msg = str(e.value)
    assert f"{p}:3" in msg and "optim.lrr" in msg and "did you mean 'optim.lr'" in msg


def test_wrong_type_and_impossible_value(tmp_path):
    with pytest.raises(ConfigError, match="'steps': expected an integer"):
        config.load(Cfg, write(tmp_path, "steps: many\n"))
    with pytest.raises(ConfigError, match=r"c.yaml:2: config key 'optim.lr': must be > 0"):
        config.load(Cfg, write(tmp_path, "optim:\n  lr: -1\n"))
    with pytest.raises(ConfigError, match="did you mean 'ipo'"):
        config.load(Cfg, None, ["loss=ipoo"])
    with pytest.raises(ConfigError, match="expected true or false|expected a number"):
        config.load(Cfg, None, ["weights.a=yes please"])


@dataclass(frozen=True)
class Outer:
    optim: Optim = param(Optim(lr=0.5, betas=(0.1, 0.2)), "a non-default nested instance")


def test_nested_override_keeps_the_parent_default_instance():
    cfg = config.load(Outer, None, ["optim.betas=[0.3, 0.4]"])
    assert cfg.optim.lr == 0.5 and cfg.optim.betas == (0.3, 0.4)
    assert config.load(Outer).optim.lr == 0.5


def test_exponent_without_dot_is_a_float():
    assert config.load(Optim, None, ["lr=3e-3"]).lr == 0.003


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(BadInput, match="invalid YAML"):
        config.load(Cfg, write(tmp_path, "steps: [1,\n"))
    with pytest.raises(BadInput, match="not found"):
        config.load(Cfg, tmp_path / "nope.yaml")
    with pytest.raises(BadInput, match="mapping"):
        config.load(Cfg, write(tmp_path, "- 1\n- 2\n"))


def test_yaml_is_read_safely(tmp_path):
    p = write(tmp_path, "name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(BadInput, match="invalid YAML"):
        config.load(Cfg, p)


def test_describe_lists_nested_keys_with_help():
    rows = {r[0]: r for r in config.describe(Cfg)}
    assert rows["optim.lr"][3] == "learning rate"
    assert rows["steps"][2] == "10"
