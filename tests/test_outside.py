"""Outside inputs: a plain model, tokenizer or data path is told apart from its files, gets a
content id, and is recorded in the manifest and lineage (and printed by show and lineage)
as an outside input with its path, hash and detected kind; a path that fits no kind the role
takes says why."""

import json

import pytest
from typer.testing import CliRunner

from llmforge import artifact, outside
from llmforge.errors import BadInput
from llmforge.stage import Role, Stage, execute
from stages.app import app
from tests.conftest import write_jsonl
from tests.slow_stage import Config, run

runner = CliRunner()
TAKES = Stage(
    name="takes", kind="corpus", config=Config, run=run, default_role="model",
    roles={"model": Role(kinds=("model",)), "tokenizer": Role(kinds=("tokenizer",), min=0),
           "data": Role(kinds=("raw",), min=0, max=None)},
)  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from tests import byo_models

    return byo_models.save_model("llama", tmp_path_factory.mktemp("ckpt") / "llama")


def test_detects_each_kind_from_its_files(tmp_path, checkpoint):
    from datasets import Dataset

    assert outside.detect(checkpoint, ("model",)) == outside.Detected(
        "model", "transformers model (LlamaForCausalLM)"
    )
    assert outside.detect(checkpoint, ("tokenizer",)).detail == "tokenizer (tokenizer.json)"
    assert outside.detect(checkpoint / "tokenizer.json", ("tokenizer",)).kind == "tokenizer"
    Dataset.from_list([{"text": "a"}]).save_to_disk(str(tmp_path / "saved"))
    assert outside.detect(tmp_path / "saved", ("raw",)).detail == "datasets save_to_disk"
    assert outside.detect(write_jsonl(tmp_path / "d.jsonl", [{}]), ("raw",)).detail == "jsonl"
    # a role's kinds are tried in order: a model directory is also a tokenizer directory
    assert outside.detect(checkpoint, ("tokenizer", "model")).kind == "tokenizer"


@pytest.mark.parametrize(
    "files, message",
    [
        ({"notes.txt": "x"}, "not a model: no config.json"),
        ({"config.json": "{"}, "not a model: config.json is not valid JSON"),
        ({"config.json": '{"hidden_size": 8}'}, "not a model: config.json has no model_type"),
        ({"config.json": '{"model_type": "llama"}'}, "no weights (*.safetensors)"),
        ({"config.json": '{"model_type": "llama"}', "model.safetensors": ""}, "no tokenizer"),
    ],
)
def test_a_directory_that_is_no_model_says_why(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(BadInput) as err:
        artifact.open_input(tmp_path, ("model",), "model")
    assert str(err.value) == f"{tmp_path}: " + str(err.value).split(": ", 1)[1]
    assert message in str(err.value)


def test_roles_without_outside_kinds_still_want_an_artifact(tmp_path):
    with pytest.raises(BadInput, match="not an artifact: no manifest.json"):
        artifact.open_input(tmp_path, ("tokens",), "tokens")
    (tmp_path / "run.partial").mkdir()
    with pytest.raises(BadInput, match="unfinished run"):
        artifact.open_input(tmp_path / "run.partial", ("model", "raw"), "model")


def test_outside_inputs_are_recorded_with_path_hash_and_kind(tmp_path, checkpoint):
    data = write_jsonl(tmp_path / "chat.jsonl", [{"messages": []}])
    out = execute(TAKES, [str(checkpoint), f"tokenizer={checkpoint}", f"data={data}"],
                  out=tmp_path / "out")  # fmt: skip
    inputs = {i["role"]: i for i in artifact.read_manifest(out)["inputs"]}
    model = inputs["model"]
    assert model["kind"] == "model" and model["path"] == str(checkpoint.resolve())
    assert model["outside"]["detected"] == "transformers model (LlamaForCausalLM)"
    assert model["id"] == "ext-" + model["outside"]["sha256"][:20]
    assert inputs["tokenizer"]["id"] == model["id"]  # the same bytes, the same id
    assert inputs["data"]["outside"]["detected"] == "jsonl"
    again = execute(TAKES, [str(checkpoint), f"tokenizer={checkpoint}", f"data={data}"],
                    out=tmp_path / "out")  # fmt: skip
    assert again == out  # the same content: a cache hit
    data.write_text(data.read_text() + "\n")
    moved = TAKES.parse_inputs([str(checkpoint), f"data={data}"]).all("data")[0]
    assert moved.id != inputs["data"]["id"]


def test_lineage_and_show_print_outside_inputs_and_flag_changes(tmp_path, checkpoint, monkeypatch):
    from llmforge import log

    monkeypatch.setattr(log.console, "width", 400)  # no wrapped table cells
    data = write_jsonl(tmp_path / "chat.jsonl", [{"messages": []}])
    out = execute(TAKES, [str(checkpoint), f"data={data}"], out=tmp_path / "out")
    shown = runner.invoke(app, ["show", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "outside input: transformers model (LlamaForCausalLM), sha256" in shown.output
    tree = runner.invoke(app, ["lineage", str(out)])
    assert tree.exit_code == 0 and "(outside: jsonl)" in tree.output
    assert "changed" not in tree.output
    data.write_text('{"messages": [1]}\n')
    node = [n for n in artifact.lineage(out)["inputs"] if n["role"] == "data"][0]
    assert node["error"].startswith("changed")
    data.unlink()
    assert runner.invoke(app, ["lineage", str(out)]).output.count("gone") == 1
    plain = runner.invoke(app, ["show", str(checkpoint), "--json"])
    assert plain.exit_code == 0 and json.loads(plain.stdout)["kind"] == "model"
