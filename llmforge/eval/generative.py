"""Generative tasks: sample n completions per prompt, verify them, report avg@k and pass@k.

Sampling follows DeepSeek-R1's advice: greedy decoding misjudges long-reasoning models, so
the default is n samples at a temperature and top-p, scored as avg@n (mean accuracy over
all samples) and unbiased pass@k (`llmforge.eval.passk`). Greedy (one sample at
temperature 0) runs only when asked for.

Verdicts come from the reward plugins of `llmforge.verifiers` (math, exact, numeric,
code in the sandbox), except `format`, which here checks compliance with the requested
mode (see `format_compliant`), not the RL shaping reward's half-points.

Rows with `tools: ["python"]` are multi-turn: the model may call the sandboxed Python tool
(`llmforge.gen.tools`, its default limits), `max_new_tokens` bounds what it writes over all
turns, and the verifier scores the prose it wrote (its final answer, not the tool's
output); each record keeps the turns, tool calls, errors and the transcript.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from llmforge import log
from llmforge.eval.passk import avg_at_k, mean_pass_at_k
from llmforge.eval.tasks import TaskSet
from llmforge.gen.base import generate_in_modes
from llmforge.gen.tools import ToolCompletion, ToolRollout
from llmforge.verifiers.answer import last_boxed
from llmforge.verifiers.dispatch import Correct


@dataclass(frozen=True)
class Sampling:
    """How completions are drawn. `greedy` forces n=1 at temperature 0."""

    n: int = 4
    ks: tuple[int, ...] = (1,)
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 128
    seed: int = 0
    greedy: bool = False
    batch_prompts: int = 8

    def effective(self) -> tuple[int, float]:
        """(samples per prompt, temperature) after applying `greedy`."""
        return (1, 0.0) if self.greedy else (self.n, self.temperature)


@dataclass
class TaskResult:
    """Per-sample records and the per-problem verdicts of one task set."""

    name: str
    records: list[dict] = field(default_factory=list)
    verdicts: dict[str, list[bool]] = field(default_factory=dict)


def format_compliant(completion: str, mode: str) -> bool:
    """Does a completion follow the requested mode and end with a boxed answer?

    think: one non-empty `<think>...</think>` block, then the answer. no_think: the chat
    template already emitted the empty think block, so the completion holds no reasoning
    block of its own (an empty one is tolerated).
    """
    boxed = last_boxed(completion.rsplit("</think>", 1)[-1]) is not None
    if mode == "think":
        if completion.count("</think>") != 1 or completion.count("<think>") > 1:
            return False
        head, _ = completion.split("</think>", 1)
        return boxed and bool(head.replace("<think>", "").strip())
    if "</think>" in completion:
        head = completion.split("</think>", 1)[0].replace("<think>", "")
        return boxed and not head.strip()
    return boxed and "<think>" not in completion


def row_mode(row: dict) -> str | None:
    """The think mode a row asks for (format rows carry it as their reference)."""
    if row.get("mode"):
        return row["mode"]
    return row["reference"] if row["verifier"] == "format" else None


def truncate(text: str, stops: Sequence[str] | None) -> str:
    """Cut a completion at the first stop string."""
    cut = len(text)
    for stop in stops or ():
        at = text.find(stop)
        if 0 <= at < cut:
            cut = at
    return text[:cut]


def _prompt(row: dict):
    if row["chat"] and isinstance(row["prompt"], str):
        return [{"role": "user", "content": row["prompt"]}]
    return row["prompt"]


def generate_rows(generator, rows: list[dict], sampling: Sampling, bar=None) -> list[list]:
    """Completions for every row, batched; each batch holds rows of one think mode, with
    or without the tool."""
    n, temperature = sampling.effective()
    out: list[list | None] = [None] * len(rows)
    by_mode: dict[tuple[str | None, bool], list[int]] = {}
    for i, row in enumerate(rows):
        by_mode.setdefault((row_mode(row), bool(row.get("tools"))), []).append(i)
    tools = ToolRollout(generator.tokenizer) if any(t for _, t in by_mode) else None
    for (mode, with_tools), idx in by_mode.items():
        sample = partial(tools.generate if with_tools else generate_in_modes, generator)
        for start in range(0, len(idx), sampling.batch_prompts):
            chunk = idx[start : start + sampling.batch_prompts]
            got = sample(
                [_prompt(rows[i]) for i in chunk],
                [mode] * len(chunk),
                n=n,
                temperature=temperature,
                top_p=sampling.top_p,
                max_new_tokens=sampling.max_new_tokens,
                seed=sampling.seed + chunk[0],
            )
            for i, completions in zip(chunk, got, strict=True):
                out[i] = completions
            if bar is not None:
                bar.advance(len(chunk))
    return out  # type: ignore[return-value]


def score(rows: list[dict], texts: list[list[str]], correct: Correct | None = None) -> list[list]:
    """(correct, value, parseable) per completion, batched per verifier."""
    correct = correct or Correct()
    flat_rows, flat_texts, where = [], [], []
    verdicts: list[list] = [[None] * len(t) for t in texts]
    for r, (row, group) in enumerate(zip(rows, texts, strict=True)):
        for s, text in enumerate(group):
            if row["verifier"] == "format":
                ok = format_compliant(text, row_mode(row))
                verdicts[r][s] = (ok, float(ok), True)
            else:
                flat_rows.append(row)
                flat_texts.append(text)
                where.append((r, s))
    scores = correct.batch(flat_texts, flat_rows) if flat_texts else []
    for (r, s), sc in zip(where, scores, strict=True):
        verdicts[r][s] = (sc.value >= 1.0, sc.value, sc.parseable)
    return verdicts


def run_task(
    generator, task: TaskSet, sampling: Sampling, correct: Correct | None = None
) -> TaskResult:
    """Generate, verify and record every sample of one task set."""
    result = TaskResult(task.name)
    with log.progress(f"eval {task.name}", total=len(task.rows)) as bar:
        completions = generate_rows(generator, task.rows, sampling, bar)
    texts = [
        [truncate(c.text, row.get("stop")) for c in group]
        for row, group in zip(task.rows, completions, strict=True)
    ]
    verdicts = score(task.rows, texts, correct)
    for row, group, text_group, verdict in zip(
        task.rows, completions, texts, verdicts, strict=True
    ):
        result.verdicts[row["id"]] = [v[0] for v in verdict]
        for s, (c, text, (ok, value, parseable)) in enumerate(zip(group, text_group, verdict)):
            result.records.append(
                {
                    "task": task.name,
                    "id": row["id"],
                    "sample": s,
                    "completion": text,
                    "correct": bool(ok),
                    "score": value,
                    "parseable": bool(parseable),
                    "finish_reason": c.finish_reason,
                    "tokens": len(c.token_ids),
                    "mode": row_mode(row),
                    **tool_record(c),
                }
            )
    return result


def tool_record(c) -> dict:
    """A multi-turn sample's turns, tool calls and errors, and its transcript."""
    if not isinstance(c, ToolCompletion):
        return {}
    return {"turns": c.turns, "tool_calls": c.tool_calls, "tool_errors": c.tool_errors,
            "transcript": c.messages}  # fmt: skip


def summarize(verdicts: dict[str, list[bool]], ks: Sequence[int]) -> dict:
    """avg@n and pass@k (for each k <= n) over the given problems."""
    if not verdicts:
        return {"problems": 0}
    groups = list(verdicts.values())
    n = min(len(g) for g in groups)
    out = {"problems": len(groups), "samples_per_problem": n, f"avg@{n}": avg_at_k(groups)}
    for k in ks:
        if k <= n:
            out[f"pass@{k}"] = mean_pass_at_k(groups, k)
    return out


def task_metrics(
    result: TaskResult, ks: Sequence[int], contaminated: set[str] = frozenset()
) -> dict:
    """Scores on all items and, when some are contaminated, on the clean ones only."""
    out = {"all": summarize(result.verdicts, ks)}
    parseable = [r["parseable"] for r in result.records]
    out["parseable_rate"] = sum(parseable) / len(parseable) if parseable else 0.0
    # The mean verifier value: partial credit (ifeval's share of constraints followed, a
    # judge's scaled score) where avg@n counts only full marks.
    scores = [r["score"] for r in result.records]
    out["mean_score"] = sum(scores) / len(scores) if scores else 0.0
    out.update(answer_spread(result.records))
    flagged = sorted(set(result.verdicts) & set(contaminated))
    if tool_rows := [r for r in result.records if "tool_calls" in r]:
        calls = sum(r["tool_calls"] for r in tool_rows)
        out["tools"] = {
            "turns": sum(r["turns"] for r in tool_rows) / len(tool_rows),
            "calls": calls / len(tool_rows),
            "error_frac": sum(r["tool_errors"] for r in tool_rows) / calls if calls else 0.0,
        }
    out["contaminated_items"] = flagged
    if flagged:
        clean = {k: v for k, v in result.verdicts.items() if k not in contaminated}
        out["clean"] = summarize(clean, ks)
    return out


def answer_spread(records: list[dict]) -> dict:
    """How varied the boxed answers are: a policy that collapsed onto one guess (RL on a
    tiny model can learn to answer 0 everywhere) shows a large `top_answer_share`."""
    answers = [last_boxed(r["completion"].rsplit("</think>", 1)[-1]) for r in records]
    given = [a.strip() for a in answers if a is not None]
    if not given:
        return {}
    top, count = Counter(given).most_common(1)[0]
    return {"distinct_answers": len(set(given)), "top_answer": top,
            "top_answer_share": count / len(records)}  # fmt: skip


def headline(metrics: dict) -> tuple[str, float] | None:
    """The one number a table shows for a task: avg@n (pass@1 when greedy)."""
    scores = metrics.get("all", {})
    for key, value in scores.items():
        if key.startswith("avg@"):
            return key, value
    return None
