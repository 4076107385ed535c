"""Long-context probes: haystacks are the asked length, scores are consistent, limits hold."""

import random

import pytest
import torch

from llmforge.eval import longctx
from llmforge.eval.suite import load


@pytest.fixture(scope="module")
def model_and_tok(tiny_model):
    return load(tiny_model)


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_haystack_length_and_needle_depth(model_and_tok, depth):
    _, tok = model_and_tok
    probe = longctx.PROBES["passkey"]
    ids = longctx.haystack_prompt(tok, probe, "12345", 200, depth, random.Random(0))
    assert 170 <= len(ids) <= 215
    text = tok.decode(ids)
    assert text.endswith(probe.question)
    needle = probe.needle.format(s="12345")
    before = text.index(needle)
    after = len(text) - before - len(needle) - len(probe.question)
    assert abs(before / (before + after) - depth) < 0.1  # share of filler before the needle


def test_continuation_logprobs_match_one_by_one(model_and_tok):
    model, _ = model_and_tok
    prompt, conts = [5, 6, 7, 8], [[9, 10], [11]]
    got = longctx.continuation_logprobs(model, prompt, conts)
    for cont, value in zip(conts, got):
        ids = torch.tensor([prompt + cont])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0], -1)
        want = sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(cont))
        assert value == pytest.approx(want, abs=1e-4)


def test_probes_summary_and_skipped_lengths(model_and_tok):
    model, tok = model_and_tok
    cfg = longctx.ProbeConfig(
        probes=("passkey", "needle"), lengths=(32, 64, 4096), depths=(0.5,), trials=2, distractors=3
    )
    records, summary = longctx.run_probes(model, tok, cfg)
    assert summary["skipped_lengths"] == [4096]  # the tiny model declares 512 positions
    assert len(records) == 2 * 2 * 1 * 2
    for r in records:
        assert 1 <= r["rank"] <= 4 and r["logprob"] < 0
        assert r["correct"] == r["output"].strip().startswith(r["secret"])
    at = summary["passkey"]["64"]
    rows = [r for r in records if r["probe"] == "passkey" and r["length"] == 64]
    assert at["rank"] == pytest.approx(sum(r["rank"] for r in rows) / 2)
    assert summary["chance_rank"] == 2.5
