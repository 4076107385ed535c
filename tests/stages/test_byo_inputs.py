"""Bad outside models get a clear error (exit 2) and nothing is published: a directory that
is no model, weights that do not fit config.json, and a model that ships its own code,
which runs only when the user opts in with model.trust_remote_code."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from llmforge import causal_lm
from llmforge.errors import BadInput
from stages.app import app
from tests import byo_models
from tests.conftest import write_jsonl

runner = CliRunner()
QUICK = ["style.enabled=false", "eval.format_prompts=0", "sft.heldout_fraction=0",
         "train.max_steps=1", "train.batch_size=2", "train.max_length=64"]  # fmt: skip
REMOTE_CODE = """
from transformers import LlamaConfig, LlamaForCausalLM


class ShippedConfig(LlamaConfig):
    model_type = "shipped_llama"


class ShippedForCausalLM(LlamaForCausalLM):
    config_class = ShippedConfig
"""


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return byo_models.save_model("llama", tmp_path_factory.mktemp("llama") / "llama")


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    rows = [{"messages": [{"role": "user", "content": "1 + 1?"},
                          {"role": "assistant", "content": "2"}]}] * 4  # fmt: skip
    return write_jsonl(tmp_path_factory.mktemp("chat") / "chat.jsonl", rows)


def sft(model, chat, out, *sets):
    args = ["sft", f"model={model}", f"chat={chat}", "-o", str(out)]
    return runner.invoke(app, [*args, *[x for s in (*QUICK, *sets) for x in ("-s", s)]])


def test_an_outside_model_chains_with_only_the_path_on_stdout(llama, chat, tmp_path):
    result = sft(llama, chat, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "out")


def test_a_directory_that_is_no_model_exits_2(chat, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model")
    result = sft(tmp_path / "notes", chat, tmp_path / "out")
    assert result.exit_code == 2
    assert f"{tmp_path / 'notes'}: not a model: no config.json" in result.output
    assert not (tmp_path / "out").exists()


def test_weights_that_do_not_fit_the_config_exit_2(llama, chat, tmp_path):
    broken = shutil.copytree(llama, tmp_path / "broken")
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3,
                                                    "intermediate_size": 48}))  # fmt: skip
    result = sft(broken, chat, tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "weights do not match config.json" in result.output
    assert (
        "missing, e.g. ['model.layers.2." in result.output and "of the wrong shape" in result.output
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


@pytest.fixture
def shipped(llama, tmp_path, monkeypatch):
    """The Llama, but as a model_type transformers does not know, with its code beside it."""
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    model = shutil.copytree(llama, tmp_path / "shipped")
    (model / "shipped.py").write_text(REMOTE_CODE)
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="shipped_llama", auto_map={
        "AutoConfig": "shipped.ShippedConfig", "AutoModelForCausalLM": "shipped.ShippedForCausalLM"})  # fmt: skip
    (model / "config.json").write_text(json.dumps(config))
    return model


def test_remote_code_is_refused_unless_the_user_opts_in(shipped, tmp_path):
    tasks = write_jsonl(tmp_path / "t.jsonl", [{"id": "a", "prompt": "1 + 1?", "reference": "2",
                                               "verifier": "math", "chat": True}])  # fmt: skip
    args = ["eval", str(shipped), f"task={tasks}", "-s", "sampling.n=1", "-s",
            "sampling.max_new_tokens=4", "-s", "report=false"]  # fmt: skip
    refused = runner.invoke(app, [*args, "-o", str(tmp_path / "refused")])
    assert refused.exit_code == 2
    assert (
        "needs remote code" in refused.output and "model.trust_remote_code=true" in refused.output
    )
    assert not (tmp_path / "modules").exists()  # no code was imported
    allowed = runner.invoke(
        app, [*args, "-o", str(tmp_path / "ok"), "-s", "model.trust_remote_code=true"]
    )
    assert allowed.exit_code == 0, allowed.output
    assert (tmp_path / "ok" / "results.json").is_file()


def test_unknown_and_non_causal_model_types_are_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "no_such_model"}')
    with pytest.raises(BadInput, match="'no_such_model' is unknown to transformers"):
        causal_lm.check_config(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    with pytest.raises(BadInput, match="'t5' has no causal-LM class"):
        causal_lm.check_config(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama",\n  "x": }')
    with pytest.raises(BadInput, match="config.json:2: invalid JSON"):
        causal_lm.check_config(tmp_path)
