"""Corrupt and unusual input files: every reader of user data treats them the same way.

A truncated or corrupt compressed stream, a bad UTF-8 byte or a corrupt parquet file is
BadInput naming the file (and the line where there is one); a UTF-8 byte-order mark is
dropped, not refused.
"""

import bz2
import gzip
import json
import lzma

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmforge import config, textfiles
from llmforge.data import sources
from llmforge.dedup.inputs import iter_rows
from llmforge.errors import BadInput
from llmforge.eval import tasks
from llmforge.post import chat_data, rl_data

BOM = b"\xef\xbb\xbf"
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
TASK = {"id": "t1", "prompt": "1+1", "reference": "2", "verifier": "numeric"}
DOC = {"id": "d1", "text": "hello world"}


def _write_zst(path, data: bytes) -> None:
    with pa.output_stream(str(path), compression="zstd") as f:
        f.write(data)


COMPRESS = {
    ".gz": lambda p, d: p.write_bytes(gzip.compress(d)),
    ".bz2": lambda p, d: p.write_bytes(bz2.compress(d)),
    ".xz": lambda p, d: p.write_bytes(lzma.compress(d)),
    ".zst": _write_zst,
}
# Each reader of user jsonl with a row it accepts; returns what it read, as a list.
READERS = {
    "documents": (DOC, lambda p: [d.text for d in sources.iter_documents(p, "web")]),
    "dedup": (DOC, lambda p: [r["text"] for _, r in iter_rows(p)]),
    "chat": (CHAT, lambda p: [r["messages"][0]["content"] for r, _ in chat_data.read_rows(p)]),
    "rl_prompts": (TASK, lambda p: [r["prompt"] for r in rl_data.read_prompts(p)]),
    "eval_tasks": (TASK, lambda p: [r["prompt"] for r in tasks.read_jsonl_tasks(p)]),
}


def rows_bytes(row: dict, n: int = 200) -> bytes:
    return b"".join(json.dumps({**row, "id": f"r{i}"}).encode() + b"\n" for i in range(n))


@pytest.mark.parametrize("suffix", list(COMPRESS))
def test_each_compression_reads_and_a_truncated_stream_is_bad_input(tmp_path, suffix):
    whole, cut = tmp_path / f"whole.jsonl{suffix}", tmp_path / f"cut.jsonl{suffix}"
    COMPRESS[suffix](whole, rows_bytes(DOC))
    assert len(list(textfiles.json_lines(whole))) == 200
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(BadInput, match="corrupt or truncated") as err:
        list(textfiles.json_lines(cut))
    assert err.value.path == str(cut) and err.value.line is not None
    garbage = tmp_path / f"garbage.jsonl{suffix}"
    garbage.write_bytes(b"this is not compressed at all\n" * 10)
    with pytest.raises(BadInput, match="corrupt or truncated"):
        list(textfiles.json_lines(garbage))


@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_refuses_a_truncated_gzip(tmp_path, reader):
    row, read = READERS[reader]
    data = gzip.compress(rows_bytes(row))
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match="corrupt or truncated") as err:
        read(path)
    assert err.value.path == str(path)


@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_names_the_line_of_a_bad_utf8_byte(tmp_path, reader):
    row, read = READERS[reader]
    path = tmp_path / "rows.jsonl"
    path.write_bytes(rows_bytes(row, 2) + b'{"text": "caf\xe9"}\n')
    with pytest.raises(BadInput, match="not UTF-8") as err:
        read(path)
    assert (err.value.path, err.value.line) == (str(path), 3)


@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_accepts_a_byte_order_mark(tmp_path, reader):
    row, read = READERS[reader]
    path = tmp_path / "rows.jsonl"
    path.write_bytes(BOM + rows_bytes(row, 2))
    got = read(path)
    assert len(got) == 2 and not any(str(g).startswith("\ufeff") for g in got)


def test_text_documents_and_yaml_with_a_byte_order_mark(tmp_path):
    text = tmp_path / "doc.txt"
    text.write_bytes(BOM + "héllo\n".encode())
    assert [d.text for d in sources.iter_documents(text, "lit")] == ["héllo\n"]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(BOM + b"lr: 0.5\nsteps: 3\n")
    data, lines = config.read_yaml(recipe)
    assert data == {"lr": 0.5, "steps": 3} and lines == {"lr": 1, "steps": 2}
    spec = tmp_path / "task.yaml"
    (tmp_path / "items.jsonl").write_bytes(BOM + rows_bytes(TASK, 1))
    spec.write_bytes(BOM + b"name: sums\ndata: items.jsonl\n")
    assert len(tasks.read_task_yaml(spec).rows) == 1


def test_bad_utf8_in_a_text_document_names_its_line(tmp_path):
    text = tmp_path / "doc.txt"
    text.write_bytes(b"line one\nline two \xff\n")
    with pytest.raises(BadInput, match="not UTF-8") as err:
        list(sources.iter_documents(text, "lit"))
    assert err.value.line == 2


@pytest.mark.parametrize("damage", ["truncated", "not parquet"])
def test_a_corrupt_parquet_is_bad_input_in_both_readers(tmp_path, damage):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"text": [f"document {i}" for i in range(500)]}), good)
    bad = tmp_path / "bad.parquet"
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"PAR1 nonsense")
    with pytest.raises(BadInput, match="corrupt or truncated parquet") as err:
        list(sources.iter_documents(bad, "web"))
    assert err.value.path == str(bad)
    with pytest.raises(BadInput, match="corrupt or truncated parquet"):
        list(chat_data.read_rows(bad))
