"""The batch plan: rows per step, token budgets in steps, ranks that can keep it."""

import pytest

from llmforge.data.batch_plan import BatchPlan
from llmforge.data.mixture import MixtureStage, stage_ends, total_steps_for
from llmforge.errors import BadInput

# 3 steps of 2 rows, 2 of 4, then 8 rows per step; 10 tokens per row
PLAN = BatchPlan(full=8, seq_len=10, phases=((3, 2), (2, 4)))


def test_rows_per_step_and_rows_before_each_step():
    assert [PLAN.rows_at(s) for s in range(7)] == [2, 2, 2, 4, 4, 8, 8]
    assert [PLAN.rows_before(s) for s in range(8)] == [0, 2, 4, 6, 10, 14, 22, 30]
    assert PLAN.warmup_steps == 5


def test_steps_in_counts_whole_steps_of_a_row_position():
    assert [PLAN.steps_in(r) for r in (0, 1, 2, 6, 9, 10, 14, 21, 22)] == [
        0,
        0,
        1,
        3,
        3,
        4,
        5,
        5,
        6,
    ]


def test_token_budgets_take_more_steps_while_the_batch_is_small():
    assert PLAN.steps_for_tokens(0, 60) == 3  # 6 rows: the three 2-row steps
    assert PLAN.steps_for_tokens(0, 61) == 4  # a token more needs the next (4-row) step
    assert PLAN.steps_for_tokens(3, 80) == 2  # 8 rows from step 3: 4 + 4
    assert PLAN.steps_for_tokens(5, 160) == 2  # full batch: 80 tokens per step
    assert PLAN.steps_for_tokens(6, 1) == 1
    constant = BatchPlan(full=100)  # one "row" per token: tokens per step
    assert [constant.steps_for_tokens(0, t) for t in (1, 100, 101, 550)] == [1, 1, 2, 6]


def test_stage_boundaries_and_total_steps_follow_the_plan():
    stages = [MixtureStage(tokens=60), MixtureStage(tokens=80), MixtureStage(tokens=0)]
    assert stage_ends(stages, PLAN, total_steps=20) == [3, 5, 20]
    budgets = [MixtureStage(tokens=60), MixtureStage(tokens=240)]
    assert total_steps_for(budgets, PLAN) == 3 + 4  # 8 rows of 4, then 16 rows in two steps


def test_ranks_that_cannot_keep_the_rows_per_step_are_refused_with_those_that_can():
    PLAN.check_ranks(batch_size=1, world=2)
    assert PLAN.micro_batches(3, batch_size=1, world=2) == 2
    with pytest.raises(BadInput, match=r"2, 4, 8 rows.*1 x 4 ranks = 4; resume on \[1, 2\]"):
        PLAN.check_ranks(batch_size=1, world=4)
    PLAN.check_ranks(batch_size=1, world=4, from_step=3)  # the 2-row steps are behind
    with pytest.raises(BadInput, match="resume on"):
        PLAN.micro_batches(0, batch_size=1, world=4)


def test_state_round_trip():
    assert BatchPlan.from_state(PLAN.state_dict()) == PLAN
