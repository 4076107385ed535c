"""The reasoning-style check: per-row NLL on assistant tokens, z-scores vs the other
sources, and the report/drop/downweight actions. (The end-to-end ranking of a
mismatched source by a trained student is in tests/stages/test_sft.py.)"""

import math

import pytest

from llmforge.post import style_check
from llmforge.post.style_check import StyleArgs


def test_report_flags_the_far_source_first():
    scores = {"a": [1.0, 1.1, 0.9, 1.05], "b": [1.2, 1.0, 1.1, 0.95], "c": [3.0, 3.2, 2.9, 3.1]}
    report = style_check.style_report(scores, z_threshold=2.0, min_gap=0.1)
    assert [r["source"] for r in report][0] == "c"
    assert report[0]["flagged"] and not any(r["flagged"] for r in report[1:])
    assert report[0]["z"] > 2 and report[-1]["z"] < 0
    assert math.isclose(report[0]["nll_mean"], 3.05, abs_tol=1e-3)


def test_tiny_gap_is_not_flagged_even_with_large_z():
    scores = {"a": [5.80, 5.81, 5.80], "b": [5.84, 5.85, 5.84]}  # an untrained student
    report = style_check.style_report(scores, z_threshold=2.0, min_gap=0.1)
    assert report[0]["source"] == "b" and report[0]["z"] > 2
    assert not report[0]["flagged"]


@pytest.mark.parametrize(
    "action, expected", [("report", (1.0, 2.0)), ("drop", (0.0, 0.0)), ("downweight", (0.25, 0.5))]
)
def test_actions_change_only_flagged_weights(action, expected):
    report = [{"source": "bad", "flagged": True}, {"source": "ok", "flagged": False}]
    weights = {"bad": (1.0, 2.0), "ok": (1.0,)}
    out = style_check.adjust_weights(weights, report, StyleArgs(action=action, downweight=0.25))
    assert out == {"bad": expected, "ok": (1.0,)}


def test_row_nll_scores_assistant_tokens_of_a_random_model(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    row = {
        "messages": [
            {"role": "user", "content": "2 + 2?"},
            {"role": "assistant", "content": "\\boxed{4}", "reasoning": "2 + 2 = 4."},
        ]
    }
    nll = style_check.row_nll(model, tok, row)
    assert abs(nll - math.log(len(tok))) < 1.0  # a random model is near uniform
    no_reply = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]
    }
    assert style_check.row_nll(model, tok, no_reply) is not None  # the end token still counts
    scores = style_check.score_sources(model, tok, {"s": [row, row, row]}, rows_per_source=2)
    assert len(scores["s"]) == 2 and scores["s"][0] == pytest.approx(nll, rel=1e-5)
    from tests.device_probe import ClaimsDevice

    probe = ClaimsDevice(model)  # a student already on a GPU gets its ids there
    assert style_check.row_nll(probe, tok, row) == pytest.approx(nll, rel=1e-6)
    assert probe.seen == ["lazy"]
