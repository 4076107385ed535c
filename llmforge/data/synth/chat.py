"""SFT conversations in think and no_think form, and a style-mismatched source.

Rows follow the chat schema of docs/contract.md. In think mode the assistant's worked
steps go in `reasoning` and the answer is only ``The answer is \\boxed{ANSWER}.``; in
no_think mode there is no reasoning trace and the answer itself carries the short column
working before the boxed result (as hybrid models answer arithmetic without thinking), so
a small model can solve problems in both modes. When a system prompt is present it ends
with the ``/think`` or ``/no_think`` flag that matches `mode`, so the chat template and
the row never disagree.
"""

from __future__ import annotations

import random

from llmforge.data.synth.problems import Problem, op_key, worked_step
from llmforge.data.synth.splits import leaks_eval, split_of

SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You are a careful math tutor. Show your work when asked to think.",
    "Answer the question. Put the final answer in \\boxed{}.",
)
SOURCE = "llmforge-synth"
MISMATCHED_SOURCE = "llmforge-synth-verbose-teacher"
_WORDS = {"+": "plus", "-": "minus", "*": "times"}
_MODES = ("think", "no_think")


def final_answer(answer: int) -> str:
    """The assistant content that closes a verifiable answer."""
    return f"The answer is \\boxed{{{answer}}}."


def assistant_turn(steps: list[str] | tuple[str, ...], answer: int, mode: str) -> dict:
    """An assistant message: think mode carries the steps as `reasoning`, no_think mode
    writes them in the answer before the boxed result."""
    if mode == "think":
        return {"role": "assistant", "content": final_answer(answer), "reasoning": "\n".join(steps)}
    return {"role": "assistant", "content": " ".join([*steps, final_answer(answer)])}


def conversation(
    row_id: str, problem: Problem, mode: str, rng: random.Random, *, system: bool, turns: int
) -> dict:
    """One SFT row: an optional system prompt, the problem and 1 or 2 user turns."""
    messages = []
    if system:
        flag = "/think" if mode == "think" else "/no_think"
        messages.append({"role": "system", "content": f"{rng.choice(SYSTEM_PROMPTS)} {flag}"})
    messages.append({"role": "user", "content": problem.question})
    if turns == 2 and (follow := follow_up(problem, rng)):
        messages.append({"role": "assistant", "content": final_answer(problem.answer)})
        question, steps, answer = follow
        messages += [{"role": "user", "content": question}, assistant_turn(steps, answer, mode)]
    else:
        messages.append(assistant_turn(problem.steps, problem.answer, mode))
    return {"id": row_id, "messages": messages, "mode": mode, "source": SOURCE}


def follow_up(problem: Problem, rng: random.Random) -> tuple[str, list[str], int] | None:
    """A second question building on the first answer, kept inside the training split."""
    for _ in range(20):
        op = rng.choice("+-*")
        n = rng.randint(2, 9) if op == "*" else rng.randint(1, 20)
        if (op == "-" and n > problem.answer) or max(problem.answer, n) < 10:
            continue  # no negative results; one-digit facts are building blocks, not items
        if split_of(f"({problem.key}){op}{n}") != "train" or leaks_eval(
            [op_key(op, problem.answer, n)]
        ):
            continue
        step, result = worked_step(problem.answer, op, n)
        text = {
            "+": "Now add {n} to that.",
            "-": "Now subtract {n} from that.",
            "*": "Now multiply that by {n}.",
        }[op].format(n=n)
        return text, [step], result
    return None


def sft_rows(
    problems: list[Problem],
    rng: random.Random,
    *,
    paired: float = 0.3,
    system: float = 0.3,
    multi_turn: float = 0.15,
) -> list[dict]:
    """SFT rows: a `paired` share of problems appear in both modes, the rest in one."""
    rows = []
    for i, problem in enumerate(problems):
        modes = ("think", "no_think") if rng.random() < paired else (rng.choice(_MODES),)
        has_system, turns = rng.random() < system, 2 if rng.random() < multi_turn else 1
        for mode in modes:
            # Paired rows share the same rng state so both versions get the same follow-up.
            turn_rng = random.Random(f"{i}-{problem.key}")
            row_id = f"sft-{i:06d}" + (f"-{mode}" if len(modes) == 2 else "")
            rows.append(
                conversation(row_id, problem, mode, turn_rng, system=has_system, turns=turns)
            )
    return rows


def verbose_reasoning(problem: Problem) -> str:
    """The same steps in a very different, wordy teacher style (for the SFT style check)."""
    lines = ["Okay, let me think about this really carefully.", f"The question: {problem.question}"]
    for i, step in enumerate(problem.steps, 1):
        head, work = step.split(": ", 1)
        for op, word in _WORDS.items():
            head, work = head.replace(op, f" {word} "), work.replace(op, f" {word} ")
        work = work.replace("=", " ... that gives ").replace(", so ", " ... so in total ")
        lines.append(f"STEP {i} :: take {head}, digit by digit: {work}")
    lines.append("Hmm, wait. Let me double-check each step again... yes, it all holds up.")
    return "\n".join(lines)


def mismatched_rows(problems: list[Problem]) -> list[dict]:
    """Think-mode rows whose reasoning uses the verbose teacher template."""
    rows = []
    for i, problem in enumerate(problems):
        answer = {
            "role": "assistant",
            "content": f"**Final Answer:** \\boxed{{{problem.answer}}}",
            "reasoning": verbose_reasoning(problem),
        }
        messages = [{"role": "user", "content": problem.question}, answer]
        rows.append(
            {
                "id": f"sftx-{i:06d}",
                "messages": messages,
                "mode": "think",
                "source": MISMATCHED_SOURCE,
            }
        )
    return rows
