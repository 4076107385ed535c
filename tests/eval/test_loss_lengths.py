"""Loss at extra window lengths (by_length), and lengths past the declared context."""

from dataclasses import replace

import pytest

from llmforge.eval import loss as losslib
from llmforge.eval import suite


def plan(tokens, **kw):
    cfg = losslib.LossConfig(seq_len=32, max_tokens=3000)
    return suite.Plan(tokens_path=tokens, loss=replace(cfg, **kw))


def test_by_length_equals_a_run_at_that_window_length(tmp_path, tiny_model, tiny_tokens):
    entry = suite.evaluate_model(tiny_model, {}, plan(tiny_tokens, lengths=(16, 64)), tmp_path)
    by_length = entry["loss"]["by_length"]
    assert set(by_length) == {"16", "64"}
    at16 = suite.evaluate_model(tiny_model, {}, plan(tiny_tokens, seq_len=16), tmp_path)
    assert by_length["16"]["loss"] == pytest.approx(at16["loss"]["overall"]["loss"], rel=1e-6)
    assert by_length["64"]["tokens"] == entry["loss"]["overall"]["tokens"]  # same data


def test_lengths_past_the_context_run_only_when_asked(tmp_path, tiny_model, tiny_tokens):
    # The tiny model declares 512 positions.
    kept = suite.evaluate_model(tiny_model, {}, plan(tiny_tokens, lengths=(64, 600)), tmp_path)
    assert set(kept["loss"]["by_length"]) == {"64"}
    both = plan(tiny_tokens, lengths=(64, 600), beyond_context=True)
    entry = suite.evaluate_model(tiny_model, {}, both, tmp_path)
    assert set(entry["loss"]["by_length"]) == {"64", "600"}
