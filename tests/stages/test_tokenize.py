"""The tokenize stage: the published tokens/tokenizer artifacts, and every bad input."""

import gzip
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from llmforge import artifact
from llmforge.data.tokens import TokenStore
from stages.app import app
from tests.conftest import write_jsonl

runner = CliRunner()


def tokenize(*args):
    return runner.invoke(app, ["tokenize", *map(str, args), "-s", "vocab_size=320", "-q"])


def test_tokens_artifact_contents(tiny_tokens, tiny_corpus):
    from transformers import AutoTokenizer

    manifest = artifact.read_manifest(tiny_tokens)
    assert manifest["kind"] == "tokens" and manifest["metrics"]["documents"] == 600
    train, val = TokenStore(tiny_tokens, "train"), TokenStore(tiny_tokens, "val")
    assert sorted(train.domains) == ["code", "literature", "math"]
    assert len(train) + len(val) == 600 and len(val) == 60
    # every document ends with the separator, and decodes back to a source text
    tok = AutoTokenizer.from_pretrained(str(tiny_tokens / "tokenizer"))
    doc = train.doc(0)
    assert doc[-1] == train.eos_id
    texts = {json.loads(line)["text"] for p in tiny_corpus.values() for line in open(p)}
    assert tok.decode(doc[:-1].tolist()) in texts
    # shuffled offline: not in reading order of domains
    assert len(set(train.domain_ids[:30].tolist())) > 1
    assert artifact.read_manifest(tiny_tokens / "tokenizer")["kind"] == "tokenizer"
    assert artifact.verify(tiny_tokens) == []


def test_cli_prints_only_the_path(tmp_path, tiny_corpus):
    out = tmp_path / "t"
    result = runner.invoke(
        app, ["tokenize", f"math={tiny_corpus['math']}", "-o", str(out), "-s", "vocab_size=320"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    again = tokenize(f"math={tiny_corpus['math']}", "-o", out)
    assert again.exit_code == 0 and again.stdout.strip() == str(out)


def test_existing_tokenizer_and_formats(tmp_path, tiny_tokens):
    rows = [{"text": f"doc {i} about things"} for i in range(20)]
    gz = tmp_path / "a.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [r["text"] for r in rows]}), tmp_path / "b.parquet")
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_text(f"plain text file {i}")
    out = tmp_path / "o"
    result = tokenize(
        f"gz={gz}",
        f"pq={tmp_path / 'b.parquet'}",
        f"txt={folder}",
        f"tokenizer={tiny_tokens}",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    m = artifact.read_manifest(out)["metrics"]
    assert m["documents"] == 43 and m["tokenizer"] == "given"
    assert m["vocab_size"] == TokenStore(tiny_tokens).vocab_size
    assert sorted(TokenStore(out).domains) == ["gz", "pq", "txt"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"text": "ok"}\n{"text": "broken\n', "bad.jsonl:2: malformed JSON"),
        (b'{"text": "ok"}\n{"body": "no text"}\n', "bad.jsonl:2: field 'text' is missing"),
        (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', "bad.jsonl:2: not UTF-8"),
        (b"", "hold no documents"),
        (b'{"text": 5}\n', "bad.jsonl:1: field 'text' is not a string"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    out = tmp_path / "out"
    result = tokenize(f"d={bad}", "-o", out)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not out.exists() and not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize("name", ["cut.jsonl.gz", "cut.parquet"])
def test_a_truncated_file_exits_2_naming_it_and_publishes_nothing(tmp_path, name):
    import pyarrow as pa
    import pyarrow.parquet as pq

    whole = tmp_path / f"whole-{name}"
    if name.endswith(".gz"):
        whole.write_bytes(gzip.compress(b'{"text": "a document"}\n' * 500))
    else:
        pq.write_table(pa.table({"text": [f"document {i}" for i in range(500)]}), whole)
    bad = tmp_path / name
    bad.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    out = tmp_path / "out"
    # --skip-bad-lines cannot skip past a stream that breaks off
    result = tokenize(f"d={bad}", "-o", out, "--skip-bad-lines")
    assert result.exit_code == 2, result.output
    assert name in result.output and "corrupt or truncated" in " ".join(result.output.split())
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_skip_bad_lines_counts_and_keeps_rejects(tmp_path):
    bad = tmp_path / "mixed.jsonl"
    bad.write_bytes(b'{"text": "good one"}\n{"text": oops}\n{"text": "good two"}\n')
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "tokenize",
            f"d={bad}",
            "-o",
            str(out),
            "-s",
            "vocab_size=320",
            "-s",
            "val_fraction=0",
            "--skip-bad-lines",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    m = artifact.read_manifest(out)["metrics"]
    assert m["documents"] == 2 and m["rejected_lines"] == 1
    reject = json.loads((out / "rejects.jsonl").read_text())
    assert reject["line"] == 2 and "malformed JSON" in reject["reason"]


def test_wrong_kind_and_not_an_artifact(tmp_path, tiny_tokens, tiny_corpus):
    result = tokenize(f"math={tiny_corpus['math']}", f"tokenizer={tmp_path}", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "no tokenizer.json" in result.output
    half = tmp_path / "half.partial"
    half.mkdir()
    result = runner.invoke(app, ["show", str(half)])
    assert result.exit_code == 2 and "not an artifact" in result.output


def test_config_typo_exits_2(tmp_path, tiny_corpus):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("vocab_size: 320\nval_fractoin: 0.1\n")
    result = runner.invoke(app, ["tokenize", f"m={tiny_corpus['math']}", "-c", str(cfg)])
    assert result.exit_code == 2
    assert "c.yaml:2" in result.output and "did you mean 'val_fraction'" in result.output


def test_dry_run_prints_plan_without_work(tmp_path, tiny_corpus):
    out = tmp_path / "o"
    result = tokenize(f"m={tiny_corpus['math']}", "-o", out, "--dry-run")
    assert result.exit_code == 0 and result.stdout.strip() == str(out)
    assert not out.exists() and not (tmp_path / "o.partial").exists()


def test_val_split_is_per_domain_and_deterministic(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [{"text": f"text number {i}"} for i in range(50)])
    a = tokenize(f"d={src}", "-o", tmp_path / "a", "-s", "val_fraction=0.2")
    b = tokenize(f"d={src}", "-o", tmp_path / "b", "-s", "val_fraction=0.2")
    assert a.exit_code == 0 and b.exit_code == 0
    assert len(TokenStore(tmp_path / "a", "val")) == 10
    docs = [TokenStore(tmp_path / name) for name in "ab"]
    assert all(np.array_equal(docs[0].doc(i), docs[1].doc(i)) for i in range(len(docs[0])))
