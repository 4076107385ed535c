"""The rlvr stage on a tiny random Llama: trains, publishes, resumes exactly, rejects bad input."""

import json

import pytest
import torch

from llmforge.errors import BadInput, RunFailed
from llmforge.verifiers import Reward, Score, register


@register("test_the_share")
class TheShare(Reward):
    """Share of words equal to 'the': a reward a random model's samples disagree on."""

    def __call__(self, completion, sample, length=None):
        words = completion.split()
        return Score(sum(w == "the" for w in words) / max(len(words), 1))


pytestmark = pytest.mark.usefixtures("one_thread")


SETS = [
    "steps=3",
    "checkpoint_every=2",
    "rollout.group_size=4",
    "rollout.prompts_per_step=2",
    "rollout.max_new_tokens=10",
    "optim.lr=0.001",
    "loss.mask_unparseable=false",
    "loss.mask_truncated=false",
    "reward.weights={test_the_share: 1.0, correct: 1.0}",
]


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "rl.jsonl"
    rows = [
        {
            "id": f"p{i}",
            "prompt": f"What is {i} + {i}?",
            "reference": str(2 * i),
            "verifier": "math",
            "chat": True,
        }
        for i in range(6)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_stage_trains_and_publishes(tiny_model, prompts, tmp_path):
    from transformers import AutoModelForCausalLM

    from llmforge.stage import execute
    from stages.rlvr import STAGE

    out = execute(STAGE, [str(tiny_model), f"prompts={prompts}"], sets=SETS, out=tmp_path / "rl")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "model" and manifest["metrics"]["steps_run"] == 3
    assert 0 <= manifest["metrics"]["generation_fraction"] <= 1
    assert manifest["metrics"]["sandbox"] in ("bwrap", "namespace", "audit-hook")
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps] == [1, 2, 3]
    trained = [m for m in steps if not m.get("skipped")]
    assert trained, "every step was skipped"
    for key in ("reward_mean", "entropy", "clip_frac_high", "grad_norm", "kept_fraction"):
        assert key in trained[0]
    # The published weights are the policy after exactly these 3 steps: the same loop run
    # in-process from the same model and config arrives at the same weights, and they
    # differ from the input model's.
    loop = _loop(tiny_model, prompts, tmp_path / "work", steps=3)
    loop.run()
    before = AutoModelForCausalLM.from_pretrained(str(tiny_model)).state_dict()
    after = AutoModelForCausalLM.from_pretrained(str(out)).state_dict()
    expected = loop.model.state_dict()
    assert set(after) == set(expected)
    for name, tensor in after.items():
        assert torch.allclose(tensor, expected[name], atol=1e-6), name
    assert sum(not torch.equal(before[k], after[k]) for k in after) > len(after) // 2
    assert (out / "tokenizer.json").is_file() and not (out / "_work").exists()


def _loop(tiny_model, prompts, work, steps=4):
    from llmforge.config import load
    from llmforge.post.rl_config import RLConfig
    from llmforge.post.rl_data import read_prompts
    from llmforge.post.rl_loop import GRPOLoop
    from stages.rlvr import load_policy

    sets = [s for s in SETS if not s.startswith("steps=")] + [f"steps={steps}"]
    cfg = load(RLConfig, None, sets)
    model, tokenizer = load_policy(tiny_model)
    return GRPOLoop(model, tokenizer, read_prompts(prompts), cfg, work)


def test_policy_is_placed_on_the_device_of_this_rank(tiny_model, monkeypatch):
    """Issue 15, fault 2: load_policy left the policy on the CPU of a GPU node."""
    from llmforge import distributed
    from stages.rlvr import load_policy

    monkeypatch.setattr(distributed, "device", lambda: torch.device("meta"))
    model, _ = load_policy(tiny_model)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert model.training and next(model.parameters()).dtype == torch.float32


def test_training_batch_follows_the_policy_device(tiny_model, prompts, tmp_path):
    """The batch is built on the CPU; what the policy is called with must be on its device."""
    from tests.device_probe import ClaimsDevice, lazy_device

    class Probe(ClaimsDevice):  # its logits live on the device it claims, as a GPU model's do
        def forward(self, **inputs):
            out = super().forward(**inputs)
            out.logits = out.logits.to(lazy_device())
            return out

    loop = _loop(tiny_model, prompts, tmp_path)
    drawn = loop.next_batch()
    assert drawn.groups, "no informative groups to build a batch from"
    batch = loop.batch_tensors(drawn.groups, drawn.temperature)
    probe = Probe(loop.model)
    logp, _ = loop.token_logprobs(probe, batch, slice(0, 2))
    assert probe.seen and set(probe.seen) == {"lazy"}
    assert logp.device.type == "cpu"  # back with the rest of the batch for the loss


def test_resume_equals_uninterrupted_run(tiny_model, prompts, tmp_path):
    straight = _loop(tiny_model, prompts, tmp_path / "a")
    straight.run()
    first = _loop(tiny_model, prompts, tmp_path / "b")
    first.run(until=2)  # "crash" after the step-2 checkpoint
    resumed = _loop(tiny_model, prompts, tmp_path / "b")
    assert resumed.resume() == 2 and resumed.stream.position == first.stream.position
    resumed.run()
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_bad_prompt_row_names_file_and_line(tiny_model, tmp_path):
    from llmforge.stage import execute
    from stages.rlvr import STAGE

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "1+1?", "reference": "2"}\n{"id": "b", "prompt": "x"}\n')
    with pytest.raises(BadInput, match=r"bad.jsonl:2: a math row needs 'reference'"):
        execute(STAGE, [str(tiny_model), f"prompts={bad}"], sets=SETS, out=tmp_path / "o")
    assert not (tmp_path / "o.partial").exists()


def test_difficulty_filter_that_keeps_nothing_fails_clearly(tiny_model, prompts, tmp_path):
    from llmforge.stage import execute
    from stages.rlvr import STAGE

    sets = SETS + ["filter.enabled=true", "filter.k=2"]
    with pytest.raises(RunFailed, match="difficulty filter kept no prompts"):
        execute(STAGE, [str(tiny_model), f"prompts={prompts}"], sets=sets, out=tmp_path / "f")
    cached = json.loads((tmp_path / "f.partial" / "_work" / "filter.json").read_text())
    assert cached["histogram_before"]["0"] == 6 and cached["ids"] == []


def test_stage_resumes_after_a_crash(tiny_model, prompts, tmp_path, monkeypatch):
    from llmforge.post.rl_loop import GRPOLoop
    from llmforge.stage import execute
    from stages.rlvr import STAGE

    real_step = GRPOLoop.train_step

    def crash_at_step_3(self):
        if self.step == 2:
            raise RuntimeError("simulated crash")
        return real_step(self)

    args = ([str(tiny_model), f"prompts={prompts}"],)
    monkeypatch.setattr(GRPOLoop, "train_step", crash_at_step_3)
    with pytest.raises(RunFailed, match="simulated crash"):
        execute(STAGE, *args, sets=SETS, out=tmp_path / "r")
    assert (tmp_path / "r.partial" / "_work" / "ckpt-0000002").is_dir()
    monkeypatch.setattr(GRPOLoop, "train_step", real_step)
    out = execute(STAGE, *args, sets=SETS, out=tmp_path / "r")
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert json.loads((out / "manifest.json").read_text())["metrics"]["steps_run"] == 3


def test_difficulty_filter_keeps_the_interval(tiny_model, prompts, tmp_path, monkeypatch):
    from llmforge.post import rl_loop
    from llmforge.stage import execute
    from stages.rlvr import STAGE

    synthetic = [0.0, 0.25, 0.5, 0.8, 0.9, 1.0]  # pass rates of p0..p5
    monkeypatch.setattr(rl_loop, "pass_rates", lambda gen, rows, cfg, seed=0: synthetic)
    sets = [s.replace("steps=3", "steps=1") for s in SETS] + ["filter.enabled=true"]
    out = execute(STAGE, [str(tiny_model), f"prompts={prompts}"], sets=sets, out=tmp_path / "k")
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert metrics["filter_kept"] == 3 and metrics["prompts"] == 3
    assert metrics["pass_rate_hist_before"]["0"] == 1
    assert metrics["pass_rate_hist_after"] == {
        "0": 0,
        "(0.0,0.2]": 0,
        "(0.2,0.4]": 1,
        "(0.4,0.6]": 1,
        "(0.6,0.8]": 1,
        "(0.8,1.0]": 0,
    }


def test_rollouts_render_each_prompt_in_its_mode(tiny_model, prompts, tmp_path):
    from llmforge.post.rl_data import assign_modes, read_prompts

    loop = _loop(tiny_model, prompts, tmp_path / "work")
    rows = assign_modes(read_prompts(prompts)[:2], ["think", "no_think"])
    groups = loop.rollouts(rows, seed=0)
    heads = [loop.tokenizer.decode(g.completions[0].prompt_token_ids) for g in groups]
    assert not heads[0].endswith("</think>\n") and heads[1].endswith("<think>\n\n</think>\n")


@register("test_boxed_form")
class BoxedForm(Reward):
    """1 for an answer in the requested \\boxed{} form, 0 for a bare one; a completion that
    gives no answer sentence at all is unparseable."""

    def __call__(self, completion, sample, length=None):
        return Score(float("\\boxed{" in completion), parseable="answer is" in completion)


def test_grpo_learns_the_rewarded_answer_form_with_unparseable_masking(
    tmp_path, tiny_tokenizer_dir
):
    from llmforge.stage import execute
    from stages.rlvr import STAGE
    from tests.fixtures_model import publish_answering_llama

    # A policy that boxes about a quarter of its answers: fitted on one boxed and three bare
    # replies per four questions, so its samples on new questions disagree on the form.
    fitted = {f"What is {i} + 1?": f"The answer is {i + 1}." if i % 4 else
              f"The answer is \\boxed{{{i + 1}}}." for i in range(16)}  # fmt: skip
    policy = publish_answering_llama(tmp_path / "policy", tiny_tokenizer_dir, fitted, steps=80)
    rows = [{"id": f"q{i}", "prompt": f"What is {i} + 1?", "reference": str(i + 1),
             "verifier": "math", "chat": True} for i in range(16, 40)]  # fmt: skip
    prompts = tmp_path / "rl.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sets = [
        "steps=16",
        "checkpoint_every=100",
        "rollout.group_size=8",
        "rollout.prompts_per_step=4",
        "rollout.dynamic_sampling=false",  # reward_mean over every sample, not kept groups
        "rollout.max_new_tokens=12",
        "rollout.modes=[no_think]",
        "optim.lr=0.003",
        "loss.mask_unparseable=true",
        "loss.mask_truncated=false",
        # Only the form counts; a sample the math verifier cannot read is unparseable.
        "reward.weights={test_boxed_form: 1.0, correct: 0.0, format: 0.0, overlong: 0.0}",
    ]
    out = execute(STAGE, [str(policy), f"prompts={prompts}"], sets=sets, out=tmp_path / "rl")
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [m for m in steps if "reward_mean" in m]
    first = sum(m["reward_mean"] for m in trained[:3]) / 3
    last = sum(m["reward_mean"] for m in trained[-3:]) / 3
    assert last >= first + 0.25 and last >= 0.8, (first, last)
    # Unparseable samples were masked out of the loss, not taught on as reward 0.
    assert any(m["masked_frac"] > 0 for m in trained)
    assert all(m["masked_frac"] == m["unparseable_frac"] for m in trained)
