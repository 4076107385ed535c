"""The dpo stage in online mode: pairs the policy samples, ranked by the ifeval verifier,
raise the held-out instruction-following reward (an all-lowercase answer form a tiny model
can learn); semi-online syncs every N steps; a crashed run resumes; bad combinations exit 2
before any work; a judge= model is wired into the ranking reward."""

import json

import pytest

from llmforge.errors import BadInput, ConfigError
from llmforge.stage import execute
from stages.dpo import STAGE
from tests.conftest import write_jsonl

TOPICS = "the king|the queen|a sword|love|death|the night|a rose|the day|war|peace|a crown|art"
SETS = [
    "online.enabled=true",
    "online.prompts_per_step=8",
    "online.heldout_samples=8",
    "pairs.k=4",
    "pairs.max_new_tokens=12",
    "train.max_steps=40",
    "train.lr=0.003",
    "train.warmup_ratio=0",
    "train.scheduler=constant",
    "train.batch_size=16",
    "train.save_steps=1000",
    "dpo.loss=sigmoid",
    "dpo.beta=0.1",
    "dpo.heldout_fraction=0.25",
]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    rows = [
        {
            "id": f"p{i}",
            "prompt": f"Describe {topic} in a few words ({i}).",
            "verifier": "ifeval",
            "reference": None,
            "chat": True,
            "constraints": [{"type": "lowercase"}],
        }
        for i, topic in enumerate(TOPICS.split("|") * 4)
    ]
    return write_jsonl(tmp_path_factory.mktemp("prompts") / "if.jsonl", rows)


def metrics(path):
    return json.loads((path / "manifest.json").read_text())["metrics"]


@pytest.mark.parametrize("sync_every", [1, 10])
def test_online_dpo_raises_heldout_instruction_following(tiny_model, prompts, tmp_path, sync_every):
    sets = SETS + [f"online.sync_every={sync_every}"]
    out = execute(
        STAGE, [f"model={tiny_model}", f"prompts={prompts}"], sets=sets, out=tmp_path / "o"
    )
    m = metrics(out)
    before, after = m["heldout_before"], m["heldout_after"]
    assert before["prompts"] == 12 and before["samples"] == 96
    assert after["reward_mean"] > before["reward_mean"] + 0.3
    assert m["steps"] == 40 and m["syncs"] == 40 // sync_every and m["pairs"] > 200
    assert m["mode"] == ("online" if sync_every == 1 else "semi-online")
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == list(range(1, 41))
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("extra", "error", "match"),
    [
        (["train.max_steps=-1"], ConfigError, "train.max_steps"),
        (["dpo.loss=kto"], ConfigError, "dpo.loss"),
        (["pairs.temperature=0"], ConfigError, "pairs.temperature"),
        (["pairs.reward={judge: 1.0}"], BadInput, "judge=PATH"),
    ],
)
def test_bad_online_setups_exit_before_work(tiny_model, prompts, tmp_path, extra, error, match):
    with pytest.raises(error, match=match):
        execute(STAGE, [f"model={tiny_model}", f"prompts={prompts}"], sets=SETS + extra,
                out=tmp_path / "bad")  # fmt: skip
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()


def test_online_needs_prompts_not_pairs(tiny_model, tmp_path):
    prefs = write_jsonl(
        tmp_path / "p.jsonl", [{"id": "a", "prompt": "q", "chosen": "a", "rejected": "b"}]
    )
    with pytest.raises(BadInput, match="online DPO samples its own pairs"):
        execute(STAGE, [f"model={tiny_model}", f"data={prefs}"], sets=SETS, out=tmp_path / "x")


def test_judge_input_serves_the_judge_reward(tiny_model, tmp_path):
    from llmforge.artifact import open_artifact
    from llmforge.config import load
    from llmforge.stage import Inputs
    from stages.dpo import Config, build_reward

    cfg = load(Config, None, ["pairs.reward={judge: 1.0, correct: 0.0}", "judge.max_score=5"])
    inputs = Inputs([open_artifact(tiny_model, ["model"], "judge")])
    reward = build_reward(cfg, inputs)
    judge = reward.parts["judge"][1]
    assert judge.model_path == str(tiny_model) and judge.cfg.max_score == 5
    routed = reward.parts["correct"][1].verifier("judge")  # judge rows through `correct` too
    assert routed.model_path == str(tiny_model)


def test_online_stage_resumes_after_a_crash(tiny_model, prompts, tmp_path, monkeypatch):
    from llmforge.errors import RunFailed
    from llmforge.post.online_dpo import OnlineDPO

    real_step = OnlineDPO.train_step

    def crash_at_step_3(self):
        if self.step == 2:
            raise RuntimeError("simulated crash")
        return real_step(self)

    sets = SETS + ["train.max_steps=4", "train.save_steps=2", "online.sync_every=3"]
    args = [f"model={tiny_model}", f"prompts={prompts}"]
    monkeypatch.setattr(OnlineDPO, "train_step", crash_at_step_3)
    with pytest.raises(RunFailed, match="simulated crash"):
        execute(STAGE, args, sets=sets, out=tmp_path / "r")
    assert (tmp_path / "r.partial" / "_work" / "ckpt-0000002").is_dir()
    monkeypatch.setattr(OnlineDPO, "train_step", real_step)
    out = execute(STAGE, args, sets=sets, out=tmp_path / "r")
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4] and metrics(out)["syncs"] == 1
