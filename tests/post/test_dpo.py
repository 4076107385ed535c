"""DPO library pieces: row conversion for paired and unpaired losses, the completion
log-prob used for held-out metrics, each TRL loss building and stepping, and pair building
(delta learning and verifier-ranked) with fake generators."""

import pytest
import torch

from llmforge.gen import Completion
from llmforge.post import dpo, pairs
from llmforge.post.dpo import DPOOptions
from llmforge.post.trl_bridge import LoraArgs, TrainArgs

ROWS = [
    {
        "prompt": f"What is {i} + 1?",
        "chosen": f"{i} + 1 = {i + 1}. \\boxed{{{i + 1}}}",
        "rejected": f"{i} + 1 = {i + 2}. \\boxed{{{i + 2}}}",
    }
    for i in range(8)
]


def test_rows_for_paired_and_unpaired_losses():
    (p,) = dpo.paired_rows(ROWS[:1], think=False)
    assert p["prompt"] == [{"role": "user", "content": "What is 0 + 1?"}]
    assert p["chosen"][0]["role"] == "assistant" and p["chat_template_kwargs"] == {
        "enable_thinking": False
    }
    unpaired = dpo.unpaired_rows(
        ROWS[:2] + [{"prompt": "q", "completion": "a", "label": False}], think=True
    )
    assert [r["label"] for r in unpaired] == [True, False, True, False, False]


def test_completion_logp_sums_only_the_completion(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    short = dpo.completion_logp(model, tok, "hi", "a", think=False)
    long = dpo.completion_logp(model, tok, "hi", "a b c d e f", think=False)
    assert short < 0 and long < short  # more tokens, more negative log-prob
    m = dpo.preference_metrics(
        model, tok, [{"prompt": "hi", "chosen": "a", "rejected": "a b c d e f"}]
    )
    assert m["accuracy"] == 1.0 and m["margin"] == pytest.approx(short - long, rel=1e-5)


def test_completion_logp_feeds_the_model_on_its_device(tiny_model):
    """Issue 15, fault 3: after training the Trainer's model is on a GPU; held-out metrics
    must send the ids there, not leave them on the CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.device_probe import ClaimsDevice

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    probe = ClaimsDevice(model)
    got = dpo.completion_logp(probe, tok, "hi", "a b", think=False)
    assert probe.seen == ["lazy"]
    assert got == pytest.approx(dpo.completion_logp(model, tok, "hi", "a b", think=False))


@pytest.mark.parametrize("loss", dpo.LOSSES)
def test_every_loss_builds_and_takes_a_step(tiny_model, tmp_path, loss):
    from llmforge.post.trl_bridge import load_model

    model, tok = load_model(tiny_model)
    before = {k: v.clone() for k, v in model.named_parameters()}
    train = TrainArgs(
        lr=1e-2, batch_size=4, max_length=96, max_steps=1, save_steps=100, warmup_ratio=0
    )
    trainer = dpo.trainer_for(
        model, None, tok, ROWS, DPOOptions(loss=loss), train, LoraArgs(), tmp_path
    )
    trainer.train()
    assert trainer.state.global_step == 1
    moved = [k for k, v in trainer.model.named_parameters() if not torch.equal(v, before[k])]
    assert moved


class FakeGen:
    """A generator answering from a table (prompt content -> list of texts)."""

    def __init__(self, answers):
        self.answers = answers

    def generate(self, prompts, n=1, **kwargs):
        out = []
        for p in prompts:
            key = p if isinstance(p, str) else p[-1]["content"]
            texts = self.answers[key]
            out.append(
                [Completion(texts[j % len(texts)], [1, 2], [0.0, 0.0], "stop") for j in range(n)]
            )
        return out


def test_delta_pairs_take_strong_as_chosen_and_skip_ties():
    strong = FakeGen({"a": ["good a"], "b": ["same"]})
    weak = FakeGen({"a": ["bad a"], "b": ["same"]})
    rows = pairs.delta_pairs(strong, weak, ["a", "b"])
    assert rows == [{"id": "delta-000000", "prompt": "a", "chosen": "good a", "rejected": "bad a"}]


def test_verifier_pairs_rank_samples_by_reward():
    from llmforge.verifiers import combine

    tasks = [
        {"id": "t1", "prompt": "1 + 1?", "reference": "2", "verifier": "math"},
        {"id": "t2", "prompt": "2 + 2?", "reference": "4", "verifier": "math"},
    ]
    gen = FakeGen({"1 + 1?": ["\\boxed{3}", "\\boxed{2}"], "2 + 2?": ["\\boxed{5}"]})
    rows = pairs.verifier_pairs(gen, tasks, combine({"correct": 1.0}), k=2)
    assert len(rows) == 1  # t2's samples all fail alike: no pair
    assert rows[0]["chosen"] == "\\boxed{2}" and rows[0]["rejected"] == "\\boxed{3}"
    assert rows[0]["prompt"] == [{"role": "user", "content": "1 + 1?"}]
