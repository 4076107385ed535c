"""Generated instruction-following prompts: deterministic by seed, valid for the verifier,
free of conflicting constraints, split so held-out prompts never reach RL or training, and
read as RL prompts (malformed constraints named by file and line)."""

import pytest

from llmforge.data.synth.ifeval import ifeval_tasks
from llmforge.errors import BadInput
from llmforge.eval.tasks import builtin, check_row
from llmforge.post.rl_data import read_prompts
from llmforge.verifiers.ifeval import constraints_error
from tests.conftest import write_jsonl

CLASHES = [{"lowercase", "uppercase"}, {"json", "bullets"}, {"quoted", "ends_with"}]


def test_same_seed_same_prompts_other_seed_others():
    assert ifeval_tasks(20, "rl", seed=3) == ifeval_tasks(20, "rl", seed=3)
    assert ifeval_tasks(20, "rl", seed=3) != ifeval_tasks(20, "rl", seed=4)


def test_rows_are_valid_tasks_without_clashing_constraints():
    rows = ifeval_tasks(300, "train")
    assert len({r["prompt"] for r in rows}) == 300
    for row in rows:
        assert check_row(row, "gen", 1)["verifier"] == "ifeval"
        assert constraints_error(row["constraints"]) is None
        types = {c["type"] for c in row["constraints"]}
        assert 1 <= len(types) <= 4 and not any(pair <= types for pair in CLASHES)
        repeat = [c for c in row["constraints"] if c["type"] == "repeat_prompt"]
        assert all(row["prompt"].startswith(c["text"]) for c in repeat)


def test_heldout_prompts_never_appear_in_rl_or_train_splits():
    held = {r["prompt"] for r in builtin("ifeval", 60, seed=0).rows}
    others = {r["prompt"] for split in ("rl", "train") for r in ifeval_tasks(400, split, seed=1)}
    assert len(held) == 60 and not held & others


def test_generated_rows_are_rl_prompts_and_bad_constraints_name_the_line(tmp_path):
    rows = ifeval_tasks(5, "rl")
    assert [r["id"] for r in read_prompts(write_jsonl(tmp_path / "rl.jsonl", rows))] == [
        r["id"] for r in rows
    ]
    bad = [rows[0], {**rows[1], "constraints": [{"type": "words", "max": "ten"}]}]
    with pytest.raises(
        BadInput, match=r"bad.jsonl:2: constraints\[0\]: .*'max' has the wrong type"
    ):
        read_prompts(write_jsonl(tmp_path / "bad.jsonl", bad))
    judged = [{"id": "j", "prompt": "Write a haiku.", "verifier": "judge"}]
    with pytest.raises(BadInput, match="j.jsonl:1: rlvr has no judge model input"):
        read_prompts(write_jsonl(tmp_path / "j.jsonl", judged))
