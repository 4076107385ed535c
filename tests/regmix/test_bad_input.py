"""Bad regmix configs fail before any proxy trains, naming the key, and leave nothing."""

import pytest

from llmforge.errors import BadInput, ConfigError
from llmforge.stage import execute
from stages.regmix import STAGE


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["target.domain_weights.poetry=1"], "target.domain_weights"),
        (["proposals.caps.poetry=0.5"], "proposals.caps"),
        (
            ["proposals.caps.literature=0.1", "proposals.caps.code=0.1", "proposals.caps.math=0.1"],
            "no mixture fits",
        ),  # fmt: skip
    ],
)
def test_bad_domains_and_caps_are_bad_input(tmp_path, tiny_tokens, sets, message):
    out = tmp_path / "mix"
    with pytest.raises(BadInput, match=message):
        execute(STAGE, [str(tiny_tokens)], sets=sets, out=out)
    assert not out.exists() and not list(tmp_path.glob("*/_work/proxies/*.json"))


def test_impossible_values_are_config_errors(tiny_tokens):
    with pytest.raises((BadInput, ConfigError), match="n_proxies"):
        execute(STAGE, [str(tiny_tokens)], sets=["proposals.n_proxies=2"], out=None)
