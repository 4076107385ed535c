"""SRFT: the entropy weighting and each loss term against hand computations, demonstrations
placed after their prompts as the chat template renders them, and a tiny learnable task on
which the demonstrations' loss falls while the reward rises."""

import json
import math

import pytest
import torch

from llmforge.errors import BadInput
from llmforge.post import grpo
from llmforge.post.rl_config import LossArgs
from llmforge.post.rl_options import SRFTArgs
from llmforge.post.srft import SRFT, entropy_weights, match
from tests.stages.test_rlvr import TheShare  # noqa: F401  (registers test_the_share)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_entropy_weights_by_hand():
    w_sft, w_rl = entropy_weights(0.5, SRFTArgs())
    assert w_sft == pytest.approx(0.5 * 0.6065307, rel=1e-6)  # 0.5 * e^-0.5
    assert w_rl == pytest.approx(0.1 * 1.6487213, rel=1e-6)  # 0.1 * e^0.5
    assert entropy_weights(0.0, SRFTArgs()) == (0.5, 0.1)
    assert entropy_weights(2.0, SRFTArgs(entropy_weighting=False)) == (0.5, 0.1)


def hand_batch():
    """Two rollouts (advantages +1, -1) and one demonstration (advantage +1), 2 tokens each;
    the second rollout has only one token."""
    return {
        "demo": torch.tensor([False, False, True]),
        "adv": torch.tensor([1.0, -1.0, 1.0]),
        "weights": torch.full((3, 2), 0.2),
        "tokens": torch.tensor([[0, 1], [1, 0], [1, 1]]),
        "lengths": torch.tensor([2, 1, 2]),
        "rewards": torch.tensor([1.0, 0.0, 1.0]),
    }


def test_prepare_weights_positive_rollouts_and_demonstrations_by_hand():
    b = hand_batch()
    srft = SRFT.__new__(SRFT)
    srft.args = SRFTArgs()
    stats = srft.prepare(b, entropy=1.0)
    w_sft, w_rl = 0.5 * math.exp(-1.0), 0.1 * math.exp(1.0)
    # only the positive rollout is scaled; the demonstration's RL weight stays as it was
    assert b["weights"][:, 0].tolist() == pytest.approx([0.2 * w_rl, 0.2, 0.2])
    # SFT: a token mean over the demonstration's 2 tokens, times w_sft
    expected = torch.tensor([[0, 0], [0, 0], [w_sft / 2, w_sft / 2]])
    assert torch.allclose(b["sft_weights"], expected)
    assert stats["srft/demos"] == 1 and stats["srft/demo_reward"] == 1.0
    assert stats["srft/w_sft"] == pytest.approx(w_sft) and stats["srft/w_rl"] == pytest.approx(w_rl)


def test_sft_term_is_the_weighted_nll_of_the_demonstration_by_hand():
    b = hand_batch()
    srft = SRFT.__new__(SRFT)
    srft.args = SRFTArgs()
    srft.prepare(b, entropy=0.0)  # w_sft = 0.5
    logits = torch.zeros(3, 2, 2, requires_grad=True)  # uniform over 2 tokens: NLL ln 2 each
    loss, nats = srft.sft_loss(logits, b, slice(0, 3))
    assert loss.item() == pytest.approx(0.5 * math.log(2))
    assert float(nats) == pytest.approx(2 * math.log(2))
    loss.backward()
    assert logits.grad[:2].abs().sum() == 0  # rollouts get no SFT gradient
    # d/dlogit of 0.5 * mean NLL: 0.25 * (p - onehot) per token, target 1 -> (0.125, -0.125)
    assert torch.allclose(logits.grad[2], torch.tensor([[0.125, -0.125], [0.125, -0.125]]))


def test_demonstration_ratio_is_its_policy_probability():
    """Behaviour probability 1: old log-prob 0, so the ratio is pi_theta itself and the
    gradient of the clipped surrogate (A > 0, ratio < 1 - eps) is -A * pi per log-prob."""
    b = hand_batch()
    old = SRFT.behaviour_logprobs(torch.full((3, 2), -0.3), b, slice(0, 3))
    assert old[2].tolist() == [0.0, 0.0] and old[0].tolist() == pytest.approx([-0.3, -0.3])
    logp = torch.log(torch.tensor([[0.5, 0.25]])).requires_grad_(True)
    weights = torch.tensor([[0.5, 0.5]])
    loss, _ = grpo.policy_loss(logp, old[2:], torch.tensor([1.0]), weights, LossArgs())
    loss.backward()
    assert loss.item() == pytest.approx(-(0.5 * 0.5 + 0.25 * 0.5))
    assert logp.grad[0].tolist() == pytest.approx([-0.25, -0.125])


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


PROMPTS = [{"id": f"p{i}", "prompt": f"the king {i}", "reference": "0"} for i in range(4)]
DEMOS = [
    {"id": "p0", "messages": [{"role": "user", "content": "ignored"},
                              {"role": "assistant", "content": "the the the the the"}]},
    {"messages": [{"role": "user", "content": "the king 1"},
                  {"role": "assistant", "content": "the the", "reasoning": "so"}]},
    {"id": "x", "messages": [{"role": "user", "content": "unrelated"},
                             {"role": "assistant", "content": "no"}]},
]  # fmt: skip


def test_demonstrations_match_by_id_then_by_user_message():
    found = match(DEMOS, PROMPTS)
    assert sorted(found) == ["p0", "p1"]
    assert found["p1"] is DEMOS[1]
    with pytest.raises(BadInput, match="no demonstration matches"):
        match(DEMOS[2:], PROMPTS)


@pytest.mark.parametrize("mode", [None, "no_think"])
def test_demonstration_follows_its_prompt_as_the_template_renders_it(tokenizer, mode):
    from llmforge.gen.base import encode_prompt, mode_kwargs, stop_token_ids
    from llmforge.post.rl_data import as_prompt

    srft = SRFT(DEMOS, PROMPTS, tokenizer, SRFTArgs(), stop_token_ids(tokenizer), 64)
    row = {**PROMPTS[1], "mode": mode}
    kwargs = mode_kwargs(mode)
    prompt_ids = encode_prompt(tokenizer, as_prompt(row), **kwargs)
    demo = srft.completion(row, prompt_ids, kwargs)
    chat = [{"role": "user", "content": "the king 1"},
            {"role": "assistant", "content": "the the", "reasoning": "so"}]  # fmt: skip
    whole = tokenizer.apply_chat_template(chat, tokenize=False, **kwargs).rstrip()
    assert tokenizer.decode(demo.prompt_token_ids + demo.token_ids) == whole
    assert demo.finish_reason == "stop" and demo.logprobs == [0.0] * len(demo.token_ids)
    assert demo.text.endswith("the the") and ("so" in demo.text) == (mode is None)


def test_entropy_counts_rollouts_masked_from_the_loss(tiny_model, tmp_path):
    """H is the policy's, measured on what it sampled: a batch whose rollouts were all cut
    at max_new_tokens (and so masked) still has the random model's entropy, not 0."""
    from llmforge.config import load
    from llmforge.post.rl_config import RLConfig
    from llmforge.post.rl_loop import GRPOLoop
    from stages.rlvr import load_policy

    sets = ["rollout.max_new_tokens=4", "rollout.dynamic_sampling=false", "rollout.group_size=2"]
    model, tokenizer = load_policy(tiny_model)
    loop = GRPOLoop(model, tokenizer, PROMPTS, load(RLConfig, None, sets), tmp_path)
    drawn = loop.next_batch()
    b = loop.batch_tensors(drawn.groups, drawn.temperature)
    assert b["mask"].sum() == 0 and b["sampled"].sum() > 0
    assert loop.policy_entropy(b) > 4.0  # ln(349) = 5.86 for a uniform policy


def test_srft_and_tools_together_are_refused(tiny_model, tmp_path):
    from llmforge.stage import execute
    from stages.rlvr import STAGE
    from tests.conftest import write_jsonl

    prompts = write_jsonl(tmp_path / "rl.jsonl", PROMPTS)
    demos = write_jsonl(tmp_path / "demos.jsonl", DEMOS)
    with pytest.raises(BadInput, match="not supported"):
        execute(STAGE, [str(tiny_model), f"prompts={prompts}", f"demos={demos}"],
                sets=["tools.enabled=true"], out=tmp_path / "o")  # fmt: skip
    assert not (tmp_path / "o.partial").exists()


# ---------------------------------------------------------------- a tiny learnable task


@pytest.fixture(scope="module")
def lit_model(tmp_path_factory, tiny_model, tiny_corpus, tokenizer):
    """The random tiny Llama after 100 steps on the literature domain: a policy whose
    entropy (about 2.7 nats) lets SRFT's weights act, as a random one's (5.8) does not:
    there w_sft = 0.5 exp(-5.8) is 0.0015."""
    from transformers import AutoModelForCausalLM

    from tests.fixtures_model import fit_and_save

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    texts = [
        json.loads(line)["text"] for line in tiny_corpus["literature"].read_text().splitlines()
    ]
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"][:64] for t in texts]

    def batch(step):
        ids = torch.tensor([rows[(step * 8 + i) % len(rows)] for i in range(8)])
        return ids, ids

    out = tmp_path_factory.mktemp("lit-model")
    return fit_and_save(model, batch, 100, 3e-3, out, tiny_model)


def test_demo_loss_falls_and_reward_rises_on_a_learnable_task(lit_model, tmp_path):
    """Reward: the share of the word 'the'; demonstrations answer 'the the the the the'."""
    from llmforge.stage import execute
    from stages.rlvr import STAGE
    from tests.conftest import write_jsonl

    prompts = write_jsonl(tmp_path / "rl.jsonl", PROMPTS)
    demos = write_jsonl(tmp_path / "demos.jsonl", [
        {"id": r["id"], "messages": [{"role": "user", "content": r["prompt"]},
                                     {"role": "assistant", "content": "the the the the the"}]}
        for r in PROMPTS
    ])  # fmt: skip
    sets = ["steps=12", "threads=1", "rollout.group_size=4", "rollout.prompts_per_step=2",
            "rollout.max_new_tokens=16", "optim.lr=0.003", "loss.mask_unparseable=false",
            "loss.mask_truncated=false",
            "reward.weights={test_the_share: 1.0, correct: 0.0, format: 0.0, overlong: 0.0}"]  # fmt: skip
    out = execute(STAGE, [str(lit_model), f"prompts={prompts}", f"demos={demos}"], sets=sets,
                  out=tmp_path / "srft")  # fmt: skip
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [m for m in steps if not m.get("skipped")]
    sft = [m["srft/sft_loss"] for m in trained]
    reward = [m["reward_mean"] for m in trained]
    assert sum(sft[-3:]) / 3 < sum(sft[:3]) / 3 - 1.0, sft
    assert sum(reward[-3:]) / 3 > sum(reward[:3]) / 3 + 0.15, reward
    # a demonstration is scored as written after the prompt: <think>, </think> and 5 x the
    assert all(m["srft/demos"] == 2 and m["srft/demo_reward"] == pytest.approx(5 / 7)
               for m in trained)  # fmt: skip
    for m in trained:  # the weights follow the entropy the step measured
        assert m["srft/w_sft"] == pytest.approx(0.5 * math.exp(-m["srft/entropy"]))
        assert m["srft/w_rl"] == pytest.approx(0.1 * math.exp(m["srft/entropy"]))
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert metrics["srft_sft_loss_last"] < metrics["srft_sft_loss_first"]
