"""Rows made from problems: chat, preference, task and planted-duplicate helpers."""

import random
import re

from llmforge.data.synth import chat, math_text, planted, prefs, tasks
from llmforge.data.synth.planted import PlantCounts
from llmforge.data.synth.splits import sample, split_of

BOXED = re.compile(r"\\boxed\{(-?\d+)\}")


def problems(n=60, split="train", seed=0):
    return sample(random.Random(seed), split, n, 2)


def test_sft_rows_follow_the_chat_schema_and_pair_modes():
    rows = chat.sft_rows(problems(200), random.Random(0), paired=0.5, multi_turn=0.3)
    for row in rows:
        assert set(row) == {"id", "messages", "mode", "source"}
        assert row["mode"] in ("think", "no_think")
        last = row["messages"][-1]
        assert last["role"] == "assistant" and BOXED.search(last["content"])
        assert last["content"].endswith("}.")
        assert ("reasoning" in last) == (row["mode"] == "think")
        for message in row["messages"][:-1]:
            assert "reasoning" not in message
        if row["messages"][0]["role"] == "system":
            flag = "/think" if row["mode"] == "think" else "/no_think"
            assert row["messages"][0]["content"].endswith(" " + flag)
    ids = {row["id"] for row in rows}
    assert len(ids) == len(rows)
    pairs = [i.removesuffix("-think") for i in ids if i.endswith("-think")]
    assert pairs and all(f"{p}-no_think" in ids for p in pairs)
    by_id = {row["id"]: row for row in rows}
    for p in pairs:
        think, no_think = by_id[f"{p}-think"], by_id[f"{p}-no_think"]
        assert [m["content"] for m in think["messages"][1:-1]] == [
            m["content"] for m in no_think["messages"][1:-1]
        ]
        # the same working: in the think block, or written out before the boxed answer
        steps, answer = think["messages"][-1]["reasoning"], think["messages"][-1]["content"]
        assert no_think["messages"][-1]["content"] == steps.replace("\n", " ") + " " + answer
    assert any(sum(m["role"] == "user" for m in r["messages"]) == 2 for r in rows)


def test_multi_turn_follow_up_answers_recompute():
    rows = chat.sft_rows(problems(100), random.Random(3), multi_turn=1.0)
    checked = 0
    for row in rows:
        users = [m for m in row["messages"] if m["role"] == "user"]
        answers = [
            int(BOXED.search(m["content"]).group(1))
            for m in row["messages"]
            if m["role"] == "assistant"
        ]
        if len(users) < 2:
            continue
        op, n = re.match(r"Now (add|subtract|multiply) .*?(\d+)", users[1]["content"]).groups()
        first, second = answers
        expected = {"add": first + int(n), "subtract": first - int(n), "multiply": first * int(n)}[
            op
        ]
        assert second == expected
        checked += 1
    assert checked > 50


def test_mismatched_rows_use_another_style():
    rows = chat.mismatched_rows(problems(20))
    for row, problem in zip(rows, problems(20), strict=True):
        answer = row["messages"][-1]
        assert answer["content"].endswith(f"\\boxed{{{problem.answer}}}")
        assert answer["reasoning"].count("STEP") == len(problem.steps)
        assert row["source"] == chat.MISMATCHED_SOURCE != chat.SOURCE


def test_preference_rejected_is_wrong_and_chosen_is_right():
    items = problems(200)
    rows = prefs.preference_rows(items, random.Random(0))
    for row, problem in zip(rows, items, strict=True):
        assert set(row) == {"id", "prompt", "chosen", "rejected"}
        assert int(BOXED.search(row["chosen"]).group(1)) == problem.answer
        wrong = int(BOXED.search(row["rejected"]).group(1))
        assert wrong != problem.answer and wrong >= 0
        # The same operations; the last one slips in exactly one of its columns.
        chosen, rejected = row["chosen"].split(": "), row["rejected"].split(": ")
        assert chosen[:-1] == rejected[:-1]
        right, wrong = chosen[-1].split(", "), rejected[-1].split(", ")
        assert len(right) == len(wrong)
        assert sum(a != b for a, b in zip(right[:-1], wrong[:-1], strict=True)) == 1


def test_math_documents_hold_every_problem_once():
    items = problems(50)
    docs = math_text.math_documents(items, random.Random(0))
    text = "\n".join(d["text"] for d in docs)
    assert all(d["domain"] == "math" and set(d) == {"id", "text", "domain"} for d in docs)
    assert sum(text.count(p.question) >= 1 for p in items) == len(items)
    assert text.count("Problem ") == len(items)


def test_tasks_follow_the_task_schema():
    rows = tasks.math_tasks(problems(5), "rl") + tasks.format_tasks(problems(4))
    for row in rows:
        assert set(row) == {"id", "prompt", "reference", "tests", "verifier", "chat"}
        assert row["tests"] is None and row["chat"] is True
    assert [r["reference"] for r in rows[5:]] == ["think", "no_think"] * 2


def test_heldout_tasks_are_in_the_eval_split_and_deterministic():
    first = tasks.heldout_arithmetic_tasks(30, difficulty=3, seed=1)
    assert first == tasks.heldout_arithmetic_tasks(30, difficulty=3, seed=1)
    assert first != tasks.heldout_arithmetic_tasks(30, difficulty=3, seed=2)
    assert len({row["prompt"] for row in first}) == 30
    assert all(row["verifier"] == "math" and row["id"].startswith("heldout-d3") for row in first)
    rng = random.Random("heldout-3-1")  # the helper's own stream: recover the keys
    keys = [p.key for p in sample(rng, "eval", 30, 3, unique="key")]
    assert all(split_of(k) == "eval" for k in keys)


def test_heldout_format_tasks_alternate_modes():
    rows = tasks.heldout_format_tasks(6, difficulty=2, seed=0)
    assert [r["reference"] for r in rows] == ["think", "no_think"] * 3
    assert all(r["verifier"] == "format" for r in rows)
    assert rows == tasks.heldout_format_tasks(6, difficulty=2, seed=0)


def test_planted_copies_and_repetition():
    docs = [
        {"id": f"d{i}", "text": " ".join(f"w{i}x{j}" for j in range(300)), "domain": "x"}
        for i in range(20)
    ]
    originals = {d["id"]: d["text"] for d in docs}
    new, records = planted.plant_copies(docs, random.Random(0), PlantCounts(2, 2, 1), "x")
    by_id = {d["id"]: d["text"] for d in docs + new}
    for record in records["exact"]:
        assert by_id[record["id"]] == originals[record["of"]]
    for record in records["near"]:
        copy, source = by_id[record["id"]].split(), originals[record["of"]].split()
        changed = sum(a != b for a, b in zip(copy, source, strict=True))
        assert 1 <= changed <= 0.02 * len(source)
    (rep,) = records["repetitive"]
    assert re.search(r"(\b\w+\b)(?: \1){39,}", by_id[rep["id"]])
    assert by_id[rep["id"]] != originals[rep["id"]]
    merged = planted.interleave(docs, new, random.Random(0))
    assert len(merged) == len(docs) + len(new)


def test_contaminate_appends_a_numbered_problem():
    doc = {"id": "m", "text": "Drill.\n\nProblem 1: a\nSolution: b\n", "domain": "math"}
    out = planted.contaminate(doc, "Q?\nSolution: 1")
    assert out["id"] == "m" and out["text"].endswith("Problem 2: Q?\nSolution: 1\n")
