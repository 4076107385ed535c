"""DPO library pieces: row conversion for paired and unpaired losses, the completion
log-prob used for held-out metrics, each TRL loss computing its own formula, and pair building
(delta learning and verifier-ranked) with fake generators."""

import math

import pytest
import torch

from llmforge.errors import BadInput
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


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# Each paired loss as a function of the logged rewards (beta times the policy/reference log
# ratio of chosen and rejected), as TRL and the papers define them.
PAIRED = {
    "sigmoid": lambda c, r: -math.log(_sigmoid(c - r)),
    "apo_zero": lambda c, r: 1 - _sigmoid(c) + _sigmoid(r),
    "apo_down": lambda c, r: _sigmoid(c) + 1 - _sigmoid(c - r),
}


def _first_log(tiny_model, tmp_path, loss, ref_seed=None, batch_size=4):
    """Train one step with `loss` and return the trainer's first logged record."""
    from llmforge.model.hf import random_llama
    from llmforge.post.trl_bridge import load_model

    model, tok = load_model(tiny_model)
    ref = None if ref_seed is None else random_llama(tok, 64, 2, seed=ref_seed)
    train = TrainArgs(lr=1e-2, batch_size=batch_size, max_length=96, max_steps=1,
                      save_steps=100, warmup_ratio=0, logging_steps=1)  # fmt: skip
    opts = DPOOptions(loss=loss, beta=1.0)
    trainer = dpo.trainer_for(model, ref, tok, ROWS, opts, train, LoraArgs(), tmp_path)
    before = {k: v.clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.state.global_step == 1
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.named_parameters())
    return trainer.state.log_history[0]


@pytest.mark.parametrize("loss", sorted(PAIRED))
def test_paired_losses_compute_their_own_formula(tiny_model, tmp_path, loss):
    # Against a reference that is another random model, the log ratios are far from 0, so
    # the three losses give clearly different values from the same rewards: the logged loss
    # must be this loss's own formula (one pair per step, so no averaging hides it).
    log = _first_log(tiny_model, tmp_path, loss, ref_seed=1, batch_size=1)
    c, r = log["rewards/chosen"], log["rewards/rejected"]
    assert log["loss"] == pytest.approx(PAIRED[loss](c, r), abs=2e-4)
    for other, formula in PAIRED.items():
        if other != loss:
            assert abs(formula(c, r) - PAIRED[loss](c, r)) > 1e-2, (other, c, r)


def test_ipo_kto_and_orpo_losses_start_at_their_own_values(tiny_model, tmp_path):
    # With the policy as its own reference every log ratio is 0 at the first step: IPO's
    # squared loss is (1 / (2 beta))^2 and KTO's is 1 - sigmoid(0) for every completion.
    # ORPO has no reference: its loss is the chosen NLL minus beta * log sigmoid(log odds).
    assert _first_log(tiny_model, tmp_path / "ipo", "ipo")["loss"] == pytest.approx(0.25, abs=1e-4)
    kto = _first_log(tiny_model, tmp_path / "kto", "kto")
    assert kto["loss"] == pytest.approx(0.5, abs=1e-4) and kto["kl"] == 0
    orpo = _first_log(tiny_model, tmp_path / "orpo", "orpo")
    assert orpo["nll_loss"] > 1  # a random model: the NLL is large...
    assert orpo["loss"] == pytest.approx(orpo["nll_loss"] - orpo["log_odds_ratio"], abs=2e-4)


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


def test_a_gold_solution_is_chosen_over_the_model_s_own_wrong_answer():
    from llmforge.verifiers import combine

    tasks = [
        {"id": "t1", "prompt": "1 + 1?", "reference": "2", "verifier": "math",
         "solution": "1+1: 1+1=2, so 2. The answer is \\boxed{2}."},
        {"id": "t2", "prompt": "2 + 2?", "reference": "4", "verifier": "math",
         "solution": "2+2: 2+2=4, so 4. The answer is \\boxed{4}."},
    ]  # fmt: skip
    gen = FakeGen({"1 + 1?": ["\\boxed{3}"], "2 + 2?": ["\\boxed{4}"]})
    rows = pairs.verifier_pairs(gen, tasks, combine({"correct": 1.0}), k=1, temperature=0)
    assert len(rows) == 1  # t2's own answer is right: nothing to prefer over it
    assert rows[0]["chosen"] == tasks[0]["solution"] and rows[0]["rejected"] == "\\boxed{3}"
    with pytest.raises(BadInput, match="or a 'solution' per task"):
        pairs.verifier_pairs(gen, [{**tasks[0], "solution": None}], combine({"correct": 1.0}), k=1)
