"""Procedural problems: every worked column and answer recomputes, keys are canonical."""

import ast
import operator
import random
import re

import pytest

from llmforge.data.synth.problems import (
    DIFFICULTIES,
    Slip,
    columns,
    make_problem,
    op_key,
    worked_step,
)
from llmforge.data.synth.splits import SPLITS, sample, split_of

STEP = re.compile(r"^(\d+)([-+*])(\d+): (.*), so (\d+)\.$")
COLUMN = re.compile(r"^(\d+)([-+*])(\d)(?:([-+])(\d))?=(\d+)$")
OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def evaluate(key: str) -> int:
    """Evaluate a canonical key such as '(3*84)-17' without eval()."""

    def walk(node):
        if isinstance(node, ast.Constant):
            return node.value
        return OPS[type(node.op)](walk(node.left), walk(node.right))

    return walk(ast.parse(key, mode="eval").body)


def check_step(step: str) -> tuple[int, int]:
    """Assert each column is a true one-digit fact (carry included) and that the digits the
    columns write, read right to left with the last carry, are the stated result; returns
    (first operand, result)."""
    a, op, b, work, result = STEP.match(step).groups()
    assert evaluate(f"{a}{op}{b}") == int(result), step
    digits, carry = [], 0
    for column in work.split(", "):
        x, op_, y, sign, c, value = COLUMN.match(column).groups()
        assert op_ == op and int(c or 0) == carry, (step, column)
        got = evaluate(f"{x}{op}{y}{sign or '+'}{c or 0}")
        assert got == int(value), (step, column)
        if op == "-":
            digits.append(value)
            carry = int(int(x) >= 10)
        else:
            digits.append(str(int(value) % 10))
            carry = int(value) // 10
    tail = str(carry) if carry and op != "-" else ""
    assert int(tail + "".join(reversed(digits))) == int(result), step
    return int(a), int(result)


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_answers_steps_and_keys_recompute(difficulty):
    rng = random.Random(difficulty)
    for _ in range(300):
        problem = make_problem(rng, difficulty)
        assert problem.answer == evaluate(problem.key) >= 0
        results = [check_step(step) for step in problem.steps]
        assert results[-1][1] == problem.answer
        for (_, previous), (start, _) in zip(results, results[1:]):
            assert start == previous  # a second step starts from the first step's result
        assert len(problem.steps) == len(problem.operation_keys())
        assert problem.solution().endswith(f"\\boxed{{{problem.answer}}}.")
        numbers = re.findall(r"\d+", problem.question)
        assert all(n in problem.key for n in numbers), (problem.question, problem.key)


def test_columns_carry_borrow_and_pad():
    assert worked_step(47, "+", 38) == ("47+38: 7+8=15, 4+3+1=8, so 85.", 85)
    assert worked_step(85, "+", 47)[0] == "85+47: 5+7=12, 8+4+1=13, so 132."
    assert worked_step(105, "-", 98)[0] == "105-98: 15-8=7, 10-9-1=0, 1-0-1=0, so 7."
    assert worked_step(347, "*", 6)[0] == "347*6: 7*6=42, 4*6+4=28, 3*6+2=20, so 2082."
    with pytest.raises(ValueError, match="one-digit multiplier"):
        columns(12, "*", 34)
    with pytest.raises(ValueError, match="a >= b"):
        columns(12, "-", 34)


def test_slips_are_a_weak_solver_s_consistent_mistakes():
    assert worked_step(47, "+", 38, Slip(0, -1)) == ("47+38: 7+8=14, 4+3+1=8, so 84.", 84)
    assert worked_step(47, "+", 38, Slip(1, drop_carry=True)) == (
        "47+38: 7+8=15, 4+3=7, so 75.",
        75,
    )
    assert worked_step(72, "-", 70, Slip(0, 1))[1] == 3
    assert worked_step(79, "+", 10, Slip(0, 1))[1] == 88  # 9 + 1 would not be a digit: 9 - 1


def test_difficulty_bounds_operand_size():
    rng = random.Random(0)
    easy = [make_problem(rng, 1) for _ in range(200)]
    operands = [int(n) for p in easy for n in re.findall(r"\d+", p.key)]
    assert max(operands) <= 99 and all("*" not in p.key for p in easy)
    # every item has an operand of two digits or more: one-digit facts are building blocks
    for difficulty in DIFFICULTIES:
        for p in (make_problem(rng, difficulty) for _ in range(200)):
            assert max(int(n) for n in re.findall(r"\d+", p.operation_keys()[0])) >= 10
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
            assert len(keys) == len(problem.steps)
            assert all(split_of(k) != "eval" for k in keys), problem
    two_step = next(p for p in sample(random.Random(6), "train", 50, 3) if p.kind == "word2")
    assert len(two_step.ops) == 2


def test_sample_reports_an_exhausted_space():
    # two-digit + and - have about 9,000 distinct computations, a tenth of them in eval
    with pytest.raises(ValueError, match="could not draw"):
        sample(random.Random(0), "eval", 2_000, 1, unique="key")
    with pytest.raises(ValueError, match="unknown split"):
        sample(random.Random(0), "test", 1, 1)
