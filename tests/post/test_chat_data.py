"""Chat and preference data: schema errors name file and line, mixing follows the weights
per epoch, the think budget cuts reasoning, and rows render through the project template."""

import json
import random

import pytest

from llmforge.errors import BadInput
from llmforge.post import chat_data
from tests.conftest import write_jsonl


def chat_row(i, source="a", reasoning="step one. step two.", mode="think"):
    return {
        "id": f"{source}{i}",
        "source": source,
        "mode": mode,
        "messages": [
            {"role": "user", "content": f"q{i}"},
            {"role": "assistant", "content": f"\\boxed{{{i}}}", "reasoning": reasoning},
        ],
    }


def test_load_source_reads_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [chat_row(i) for i in range(3)]
    write_jsonl(tmp_path / "a.jsonl", rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "b.parquet")
    assert chat_data.load_source(tmp_path / "a.jsonl") == rows
    assert [r["id"] for r in chat_data.load_source(tmp_path / "b.parquet")] == ["a0", "a1", "a2"]
    assert len(chat_data.load_source(tmp_path)) == 6  # a folder reads every file


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"messages": []}, "'messages'"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
        (
            {
                "messages": [
                    {"role": "user", "content": "x", "reasoning": "r"},
                    {"role": "assistant", "content": "y"},
                ]
            },
            "messages[0].reasoning",
        ),
        ({"messages": [{"role": "user", "content": "x"}]}, "assistant turn"),
        ({**chat_row(0), "mode": "fast"}, "'mode'"),
    ],
)
def test_bad_chat_rows_name_field_file_and_line(tmp_path, bad, field):
    path = write_jsonl(tmp_path / "d.jsonl", [chat_row(0), bad])
    with pytest.raises(BadInput) as err:
        chat_data.load_source(path)
    assert field in str(err.value) and "d.jsonl" in str(err.value) and "2" in str(err.value)


def test_invalid_json_line_is_reported(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(chat_row(0)) + "\n{not json\n")
    with pytest.raises(BadInput, match="malformed JSON"):
        chat_data.load_source(path)


def test_preference_rows_paired_and_unpaired(tmp_path):
    good = [
        {"prompt": "p", "chosen": "a", "rejected": "b"},
        {"prompt": "p", "completion": "a", "label": True},
    ]
    assert len(chat_data.load_source(write_jsonl(tmp_path / "p.jsonl", good), "preference")) == 2
    bad = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "p", "chosen": "a"}])
    with pytest.raises(BadInput, match="'rejected'"):
        chat_data.load_source(bad, "preference")


def test_mix_follows_weights_per_epoch():
    sources = {
        "a": [chat_row(i, "a") for i in range(100)],
        "b": [chat_row(i, "b") for i in range(100)],
    }
    stream = chat_data.mixed_stream(sources, {"a": (3.0, 1.0), "b": (1.0,)}, epochs=3, seed=0)
    assert len(stream) == 600
    share = [sum(r["source"] == "a" for r in stream[e * 200 : (e + 1) * 200]) for e in range(3)]
    assert share == [150, 100, 100]  # epoch 0 at 3:1, then the last weight repeats
    epoch0 = stream[:200]
    assert len({r["id"] for r in epoch0 if r["source"] == "a"}) == 100  # every row before repeats
    assert stream == chat_data.mixed_stream(sources, {"a": (3.0, 1.0)}, epochs=3, seed=0)


def test_mix_rejects_unknown_source_and_zero_weights():
    sources = {"a": [chat_row(0)]}
    with pytest.raises(BadInput, match="unknown sources"):
        chat_data.mixed_stream(sources, {"z": (1.0,)}, 1, 0)
    with pytest.raises(BadInput, match="sum to 0"):
        chat_data.mix_epoch(sources, {"a": 0.0}, random.Random(0), 10)


def test_think_budget_cuts_reasoning_and_template_closes_it(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    long = " ".join(f"step {i} adds one." for i in range(40))
    row, cut = chat_data.apply_think_budget(chat_row(0, reasoning=long), tok, budget=10)
    assert cut
    kept = row["messages"][1]["reasoning"]
    assert len(tok(kept, add_special_tokens=False)["input_ids"]) <= 10 and long.startswith(kept)
    _, cut_short = chat_data.apply_think_budget(chat_row(0, reasoning="short"), tok, budget=10)
    assert not cut_short
    trl = chat_data.to_trl_chat(row)
    text = tok.apply_chat_template(trl["messages"], tokenize=False, **trl["chat_template_kwargs"])
    assert f"<think>\n{kept}\n</think>\n\\boxed{{0}}" in text


def test_trl_rows_carry_mode_and_fold_tool_calls(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    row = chat_row(1, mode="no_think")
    row["messages"][1]["tool_calls"] = [{"name": "calc", "arguments": {"x": 1}}]
    trl = chat_data.to_trl_chat(row)
    assert trl["chat_template_kwargs"] == {"enable_thinking": False}
    text = tok.apply_chat_template(trl["messages"], tokenize=False, **trl["chat_template_kwargs"])
    assert "<think>\n\n</think>\n" in text and "step one" not in text
    assert '<tool_call>\n{"name": "calc", "arguments": {"x": 1}}\n</tool_call>' in text
    unflagged = chat_data.to_trl_chat({**row, "mode": None})
    assert unflagged["chat_template_kwargs"] == {"enable_thinking": None}


def test_tokenize_chat_trains_assistant_turns_but_not_the_no_think_prompt(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    row = chat_row(3, mode="no_think")
    row["messages"] = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b1"},
        *row["messages"],
    ]
    enc = chat_data.tokenize_chat(row, tok)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    trained = tok.decode([t for t, m in zip(ids, mask) if m])
    assert trained == "b1<|im_end|>\\boxed{3}<|im_end|>"  # both turns, no empty think block
    think = chat_data.tokenize_chat(chat_row(3, mode="think"), tok)
    trained = tok.decode([t for t, m in zip(think["input_ids"], think["assistant_masks"]) if m])
    assert trained == "<think>\nstep one. step two.\n</think>\n\\boxed{3}<|im_end|>"
    assert "assistant_masks" not in chat_data.tokenize_chat(row, tok, loss_on="all")
