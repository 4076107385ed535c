"""Reading corpora and eval files: lineage, domains and bad input with file and line."""

import json

import pytest

from llmforge.dedup.inputs import corpus_files, ingest, load_eval_items
from llmforge.errors import BadInput


def write(path, text, mode="w"):
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def manifest(path, kind, inputs=()):
    write(
        path / "manifest.json",
        json.dumps({"kind": kind, "id": "x", "files": {}, "schema": 1, "inputs": list(inputs)}),
    )
    return path


ROW = '{"id": "a", "text": "hello", "domain": "web"}\n'


@pytest.mark.parametrize(
    "content, message, line",
    [
        (ROW + "{not json\n", "malformed JSON", 2),
        (ROW + '{"id": "b"}\n', "missing 'text'", 2),
        (ROW.encode() + b'{"text": "caf\xe9"}\n', "not UTF-8", 2),
        ('{"text": "   "}\n', "'text' is empty", 1),
        ('{"text": 5}\n', "'text' must be a string", 1),
        ("[1, 2]\n", "expected a JSON object", 1),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, content, message, line):
    src = write(tmp_path / "docs.jsonl", content)
    with pytest.raises(BadInput) as err:
        ingest([(src, None)], tmp_path / "out", 2, "text")
    assert message in str(err.value) and err.value.line == line and err.value.path == str(src)


def test_empty_input_is_bad(tmp_path):
    src = write(tmp_path / "empty.jsonl", "\n\n")
    with pytest.raises(BadInput, match="no documents"):
        ingest([(src, None)], tmp_path / "out", 2, "text")


def test_ingest_deals_round_robin_and_counts(tmp_path):
    rows = "".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(5))
    src = write(tmp_path / "raw.jsonl", rows)
    stats = ingest([(src, "lit")], tmp_path / "out", 2, "text")
    shards = [p.read_text().splitlines() for p in sorted((tmp_path / "out").glob("*.jsonl"))]
    assert [len(s) for s in shards] == [3, 2]
    first = json.loads(shards[0][0])
    assert first == {"id": "raw:1", "text": "doc 0", "domain": "lit"}
    assert stats.docs == 5 and stats.domains["lit"][0] == 5


def test_corpus_artifact_and_tokens_lineage(tmp_path):
    corpus = manifest(tmp_path / "corpus", "corpus")
    write(corpus / "documents" / "00000.jsonl", ROW)
    write(corpus / "_work" / "scratch.jsonl", ROW)  # never read
    assert [p.name for p, _ in corpus_files(corpus)] == ["00000.jsonl"]
    raw = write(tmp_path / "code.jsonl", ROW)
    tok = manifest(tmp_path / "tokenizer", "tokenizer")
    tokens = manifest(
        tmp_path / "tokens",
        "tokens",
        [
            {"role": "corpus", "path": str(corpus), "id": "c"},
            {"role": "code", "path": str(raw), "id": "r"},
            {"role": "tokenizer", "path": str(tok), "id": "t"},
        ],
    )
    found = corpus_files(tokens)
    assert [(p.name, d) for p, d in found] == [("00000.jsonl", None), ("code.jsonl", "code")]


def test_unusable_inputs_are_bad(tmp_path):
    with pytest.raises(BadInput, match="'model' artifact"):
        corpus_files(manifest(tmp_path / "m", "model"))
    gone = manifest(
        tmp_path / "t", "tokens", [{"role": "x", "path": str(tmp_path / "gone"), "id": "g"}]
    )
    with pytest.raises(BadInput, match="no longer exists"):
        corpus_files(gone)
    with pytest.raises(BadInput, match="no jsonl"):
        corpus_files((tmp_path / "emptydir").mkdir() or tmp_path / "emptydir")


def test_eval_items_use_prompt_and_reference(tmp_path):
    src = write(
        tmp_path / "math.jsonl",
        '{"id": "q1", "prompt": "What is 2+2?", "reference": "4"}\n'
        '{"id": "q2", "prompt": [{"role": "user", "content": "Hi there"}], "reference": null}\n',
    )
    items = load_eval_items(src)
    assert [(i.source, i.id) for i in items] == [("math", "q1"), ("math", "q2")]
    assert items[0].text == "What is 2+2?\n4" and items[1].text.startswith("Hi there")
    write(tmp_path / "bad.jsonl", '{"id": "q3", "reference": "4"}\n')
    with pytest.raises(BadInput, match="prompt") as err:
        load_eval_items(tmp_path / "bad.jsonl")
    assert err.value.line == 1
