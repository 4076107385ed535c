"""Gold-answer bits-per-byte: which rows are scored, and that batching scores exactly the
answer tokens (checked against one unpadded forward pass per row)."""

import json
import math

import pytest
import torch

from llmforge.eval import answer_loss
from llmforge.eval.suite import load
from llmforge.stage import execute
from stages.eval import STAGE
from tests.conftest import write_jsonl

ROWS = [
    {"id": "a", "prompt": "12 + 30 = ", "reference": "42", "verifier": "math", "chat": False},
    {"id": "b", "prompt": "the king and the queen " * 8, "reference": "7", "verifier": "numeric",
     "chat": False},
    {"id": "c", "prompt": "Say yes.", "reference": "yes", "verifier": "exact", "chat": False},
    {"id": "d", "prompt": "def f():", "reference": None, "verifier": "code", "chat": False},
    {"id": "e", "prompt": "Hi", "reference": "think", "verifier": "format", "chat": True},
    {"id": "f", "prompt": "12 + 30 = ?", "reference": "42", "verifier": "math", "chat": True},
]  # fmt: skip


def test_only_plain_rows_with_a_string_answer_have_a_gold_text():
    golds = [answer_loss.gold_text(r) for r in ROWS]
    assert golds == ["\\boxed{42}", "7", "yes", None, None, None]


def test_batched_nll_equals_one_forward_per_row(tiny_model):
    model, tok = load(tiny_model)
    scored = answer_loss.pairs(tok, ROWS, max_len=512)
    assert len(scored) == 3
    batched = answer_loss.answer_nll(model, scored)
    for (ids, start, _), got in zip(scored, batched):
        with torch.inference_mode():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        want = -sum(float(logp[t - 1, ids[t]]) for t in range(start, len(ids)))
        assert got == pytest.approx(want, rel=1e-4)
    ids, start, n_bytes = scored[0]
    assert tok.decode(ids[start:]) == "\\boxed{42}" and n_bytes == len("\\boxed{42}")
    assert tok.decode(ids[:start]) == "12 + 30 = "


def test_long_prompts_keep_their_end_and_the_whole_answer(tiny_model):
    _, tok = load(tiny_model)
    (ids, start, n_bytes), *_ = answer_loss.pairs(tok, [ROWS[1]], max_len=8)
    assert len(ids) == 8 and n_bytes == 1 and tok.decode(ids[start:]) == "7"


def test_task_answer_bpb_is_bits_over_bytes(tiny_model):
    model, tok = load(tiny_model)
    got = answer_loss.task_answer_bpb(model, tok, ROWS, batch_size=2)
    nats = answer_loss.answer_nll(model, answer_loss.pairs(tok, ROWS, 512))
    n_bytes = len("\\boxed{42}") + 1 + 3
    assert got["answer_items"] == 3
    assert got["answer_bpb"] == pytest.approx(sum(nats) / math.log(2) / n_bytes, rel=1e-4)
    assert answer_loss.task_answer_bpb(model, tok, ROWS[3:]) == {}  # code, format, chat


def test_eval_stage_without_sampling_reports_only_answer_bpb(tmp_path, tiny_model):
    tasks = write_jsonl(tmp_path / "t.jsonl", ROWS[:3] + ROWS[5:])
    out = execute(STAGE, [str(tiny_model), f"task={tasks}"], sets=["sample=false", "report=false"],
                  out=tmp_path / "eval")  # fmt: skip
    entry = next(iter(json.loads((out / "results.json").read_text())["models"].values()))
    metrics = entry["tasks"]["t"]
    assert set(metrics) == {"answer_bpb", "answer_nll", "answer_items"}
    assert metrics["answer_items"] == 3 and metrics["answer_bpb"] > 0
    assert not (out / "samples").exists() or not list((out / "samples").rglob("*.jsonl"))
