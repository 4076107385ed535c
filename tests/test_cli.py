"""The CLI surface: all ten stages registered, help text, utility commands, exit codes."""

import json

from typer.testing import CliRunner

from stages.app import STAGES, app

runner = CliRunner()


def test_all_stages_and_utilities_registered():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in (*STAGES, "show", "lineage", "verify", "ls"):
        assert name in result.output


def test_stage_help_explains_config_keys():
    result = runner.invoke(app, ["tokenize", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "vocab_size" in text and "BPE vocabulary size" in text and "--skip-bad-lines" in text


def test_utilities_on_a_tokens_artifact(tiny_tokens, tmp_path):
    show = runner.invoke(app, ["show", str(tiny_tokens), "--json"])
    assert show.exit_code == 0 and json.loads(show.stdout)["kind"] == "tokens"
    lineage = runner.invoke(app, ["lineage", str(tiny_tokens)])
    assert lineage.exit_code == 0 and "literature" in lineage.output
    assert runner.invoke(app, ["verify", str(tiny_tokens)]).exit_code == 0
    listing = runner.invoke(app, ["ls", str(tiny_tokens.parent)])
    assert listing.exit_code == 0 and "tokens" in listing.output


def test_verify_fails_with_exit_2_on_corruption(tmp_path, tiny_corpus):
    out = tmp_path / "t"
    assert (
        runner.invoke(
            app,
            ["tokenize", f"m={tiny_corpus['math']}", "-o", str(out), "-s", "vocab_size=320", "-q"],
        ).exit_code
        == 0
    )
    target = out / "shards" / "00000.bin"
    data = bytearray(target.read_bytes())
    data[0] ^= 0xFF
    target.write_bytes(bytes(data))
    result = runner.invoke(app, ["verify", str(out)])
    assert result.exit_code == 2 and "sha256 mismatch" in result.output
