"""Generated instruction-following prompts: deterministic by seed, valid for the verifier,
free of conflicting constraints, and split so held-out prompts never reach RL or training."""

from llmforge.data.synth.ifeval import ifeval_tasks
from llmforge.eval.tasks import builtin, check_row
from llmforge.verifiers.ifeval import constraints_error

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
