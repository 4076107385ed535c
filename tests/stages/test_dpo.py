"""The dpo stage end to end on the tiny model: a learnable preference raises held-out
accuracy, delta learning teaches a weak model to prefer a strong model's answers, verifier pairs need a spread of
scores, and unpaired rows need KTO."""

import json
import random
import re

import pytest

from llmforge.errors import BadInput
from llmforge.stage import execute
from stages.dpo import STAGE
from tests.conftest import write_jsonl

SMALL = [
    "train.batch_size=8",
    "train.max_length=128",
    "train.warmup_ratio=0",
    "train.logging_steps=1",
    "train.save_steps=1000",
]


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    from llmforge.data.synth import prefs as synth_prefs
    from llmforge.data.synth import splits

    rng = random.Random(0)
    rows = synth_prefs.preference_rows(splits.sample(rng, "train", 120, 1), rng)
    # A preference a 100k-parameter model can learn in a few steps: the rejected answer
    # (already off by a slip in the last step) also drops the \boxed{} format.
    for row in rows:
        row["rejected"] = re.sub(r"\\boxed\{(-?\d+)\}", r"\1", row["rejected"])
    return write_jsonl(tmp_path_factory.mktemp("prefs") / "prefs.jsonl", rows)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    rows = [
        {
            "id": f"t{i}",
            "prompt": f"What is {i} + {i}?",
            "reference": str(2 * i),
            "verifier": "math",
            "chat": True,
        }
        for i in range(6)
    ]
    return write_jsonl(tmp_path_factory.mktemp("tasks") / "tasks.jsonl", rows)


def metrics(path):
    return json.loads((path / "manifest.json").read_text())["metrics"]


def test_dpo_raises_heldout_accuracy_on_a_learnable_preference(tmp_path, tiny_model, prefs):
    sets = SMALL + [
        "train.lr=0.001",
        "train.max_steps=40",
        "dpo.heldout_fraction=0.2",
        "dpo.loss=apo_zero",
    ]
    out = execute(STAGE, [f"model={tiny_model}", str(prefs)], sets=sets, out=tmp_path / "dpo")
    m = metrics(out)
    before, after = m["heldout_before"], m["heldout_after"]
    assert before["pairs"] == after["pairs"] == 24
    assert after["margin"] > before["margin"] + 0.3
    # The random model prefers the shorter, unboxed answer; 40 steps teach it the reverse.
    assert before["accuracy"] <= 0.2 and after["accuracy"] >= before["accuracy"] + 0.5
    assert m["pair_source"] == "files" and m["steps"] == 40
    assert "rewards/margins" in m["train_last"]


def test_delta_learning_teaches_the_weak_model_to_prefer_the_strong_answers(
    tmp_path, tiny_tokenizer_dir
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmforge.gen import TransformersGenerator
    from tests.fixtures_model import publish_answering_llama

    questions = [f"What is {i} + {i}?" for i in range(40)]
    tasks = write_jsonl(tmp_path / "tasks.jsonl", [
        {"id": f"t{i}", "prompt": q, "reference": str(2 * i), "verifier": "math", "chat": True}
        for i, q in enumerate(questions)
    ])  # fmt: skip
    # Two models that answer differently: the strong one boxes its answer, the weak one does
    # not (neither needs to be right: delta learning learns the difference).
    strong = publish_answering_llama(tmp_path / "strong", tiny_tokenizer_dir, {
        q: f"The answer is \\boxed{{{2 * i}}}." for i, q in enumerate(questions[:20])})  # fmt: skip
    weak = publish_answering_llama(tmp_path / "weak", tiny_tokenizer_dir, {
        q: f"The answer is {2 * i}." for i, q in enumerate(questions[:20])}, seed=1)  # fmt: skip
    sets = SMALL + [
        "train.max_steps=30",
        "train.lr=0.01",
        "pairs.max_new_tokens=12",
        "pairs.temperature=0",
        "lora.mode=lora",
        "lora.r=4",
        "dpo.heldout_fraction=0.25",
    ]
    # The policy is the weak model itself: before training it prefers its own answers.
    items = [f"model={weak}", f"prompts={tasks}", f"strong={strong}", f"weak={weak}"]
    out = execute(STAGE, items, sets=sets, out=tmp_path / "delta")
    m = metrics(out)
    assert m["pair_source"] == "delta" and m["adapter"] == "merged"
    pairs = {p["prompt"][0]["content"]: p for p in map(json.loads, open(out / "pairs.jsonl"))}
    # chosen is what the strong model answers greedily, rejected what the weak one answers
    for model, side in ((strong, "chosen"), (weak, "rejected")):
        gen = TransformersGenerator(AutoModelForCausalLM.from_pretrained(str(model)),
                                    AutoTokenizer.from_pretrained(str(model)),
                                    template_kwargs={"enable_thinking": False})  # fmt: skip
        prompts = [[{"role": "user", "content": q}] for q in pairs]
        texts = [c[0].text.strip() for c in gen.generate(prompts, n=1, temperature=0.0,
                                                         max_new_tokens=12)]  # fmt: skip
        assert texts == [p[side] for p in pairs.values()], side
    before, after = m["heldout_before"], m["heldout_after"]
    assert before["pairs"] == after["pairs"] == 10
    assert before["accuracy"] <= 0.2 and after["accuracy"] >= 0.8
    assert AutoModelForCausalLM.from_pretrained(str(out)) is not None


def test_verifier_pairs_with_no_score_spread_are_bad_input(tmp_path, tiny_model, tasks):
    # A random model never boxes the right answer: every sample scores 0, so no pair.
    sets = SMALL + ["pairs.k=2", "pairs.max_new_tokens=8"]
    with pytest.raises(BadInput, match="only 0 preference pairs"):
        execute(STAGE, [f"model={tiny_model}", f"prompts={tasks}"], sets=sets, out=tmp_path / "v")
    assert not (tmp_path / "v.partial").exists()


def test_unpaired_rows_need_kto_and_train_with_it(tmp_path, tiny_model):
    rows = [
        {"prompt": f"{i} + 1?", "completion": f"\\boxed{{{i + 1 + i % 2}}}", "label": i % 2 == 0}
        for i in range(8)
    ]
    data = write_jsonl(tmp_path / "kto.jsonl", rows)
    with pytest.raises(BadInput, match="need dpo.loss=kto"):
        execute(STAGE, [f"model={tiny_model}", str(data)], sets=SMALL, out=tmp_path / "bad")
    out = execute(
        STAGE,
        [f"model={tiny_model}", str(data)],
        sets=SMALL + ["dpo.loss=kto", "train.max_steps=1"],
        out=tmp_path / "kto",
    )
    assert metrics(out)["steps"] == 1


def test_delta_learning_needs_both_models(tmp_path, tiny_model, tasks):
    with pytest.raises(BadInput, match="both strong=PATH and weak=PATH"):
        execute(
            STAGE,
            [f"model={tiny_model}", f"prompts={tasks}", f"strong={tiny_model}"],
            sets=SMALL,
            out=tmp_path / "x",
        )
