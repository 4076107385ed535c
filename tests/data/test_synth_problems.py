"""Procedural problems: every worked step and answer recomputes, keys are canonical."""

import ast
import operator
import random
import re

import pytest

from llmforge.data.synth.problems import DIFFICULTIES, make_problem, op_key
from llmforge.data.synth.splits import SPLITS, sample, split_of

STEP = re.compile(r"^(-?\d+) ([-+*]) (-?\d+) = (-?\d+)\.$")
OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def evaluate(key: str) -> int:
    """Evaluate a canonical key such as '(3*84)-17' without eval()."""

    def walk(node):
        if isinstance(node, ast.Constant):
            return node.value
        return OPS[type(node.op)](walk(node.left), walk(node.right))

    return walk(ast.parse(key, mode="eval").body)


def check_steps(steps) -> int:
    """Assert each 'a op b = c.' step holds and each starts from the previous result."""
    previous = None
    for step in steps:
        match = STEP.match(step)
        assert match, step
        a, op, b, c = match.groups()
        assert evaluate(f"{a}{op}{b}") == int(c), step
        previous = int(c)
    return previous


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_answers_steps_and_keys_recompute(difficulty):
    rng = random.Random(difficulty)
    for _ in range(300):
        problem = make_problem(rng, difficulty)
        assert problem.answer == evaluate(problem.key)
        assert problem.answer >= 0
        last_sum = check_steps(problem.steps[-1:])
        assert last_sum == problem.answer
        check_steps(problem.steps)
        assert problem.solution().endswith(f"\\boxed{{{problem.answer}}}.")
        numbers = re.findall(r"\d+", problem.question)
        assert all(n in problem.key for n in numbers), (problem.question, problem.key)


def test_difficulty_bounds_operand_size():
    rng = random.Random(0)
    easy = [make_problem(rng, 1) for _ in range(200)]
    assert max(int(n) for p in easy for n in re.findall(r"\d+", p.key)) <= 20
    assert all("*" not in p.key for p in easy)
    with pytest.raises(ValueError, match="difficulty"):
        make_problem(rng, 4)


def test_keys_ignore_operand_order_for_commutative_ops():
    assert op_key("+", 7, 12) == op_key("+", 12, 7) == "7+12"
    assert op_key("-", 12, 7) == "12-7"


def test_generation_is_deterministic():
    first = [make_problem(random.Random("s"), 2) for _ in range(5)]
    again = [make_problem(random.Random("s"), 2) for _ in range(5)]
    assert first == again


def test_split_shares_match_buckets():
    keys = [f"{a}+{b}" for a in range(100) for b in range(100)]
    counts = {name: 0 for name in SPLITS}
    for key in keys:
        counts[split_of(key)] += 1
    for name, buckets in SPLITS.items():
        assert abs(counts[name] / len(keys) - len(buckets) / 100) < 0.02


def test_sample_respects_split_uniqueness_and_exclude():
    eval_keys = {p.key for p in sample(random.Random(1), "eval", 100, 2, unique="key")}
    assert len(eval_keys) == 100 and all(split_of(k) == "eval" for k in eval_keys)
    more = sample(random.Random(1), "eval", 50, 2, unique="key", exclude=eval_keys)
    assert not eval_keys & {p.key for p in more}
    train = sample(random.Random(2), "train", 300, 1)
    assert len({p.question for p in train}) == 300
    assert all(split_of(p.key) == "train" for p in train)


def test_training_problems_never_work_out_an_eval_computation():
    for split in ("train", "rl"):
        for problem in sample(random.Random(5), split, 400, 3):
            keys = problem.operation_keys()
            assert len(keys) >= len(problem.steps) + 1
            assert all(split_of(k) != "eval" for k in keys), problem
    two_step = next(p for p in sample(random.Random(6), "train", 50, 3) if p.kind == "word2")
    assert len(two_step.ops) == 2


def test_sample_reports_an_exhausted_space():
    with pytest.raises(ValueError, match="could not draw"):
        sample(random.Random(0), "eval", 80, 1, unique="key")
    with pytest.raises(ValueError, match="unknown split"):
        sample(random.Random(0), "test", 1, 1)
