"""The code verifier: the sample's tests judge the completion's functions, across a wall.

HumanEval style: the program is the prompt followed by the completion. When the
completion holds a fenced code block, that block is used; when it defines the entry point
itself, it replaces the prompt instead of continuing it. A program that does not compile is
unparseable; one that compiles scores 1.0 only if the judge reports that every test ran
and passed, and 0.0 on anything else (a failed assertion, an exception, an early exit, a
timeout, a value that is not a plain built-in, no report at all).

Two sandboxed interpreters per program (`llmforge.verifiers.harness`): the player runs the
untrusted program and answers calls, the judge runs the tests with stand-ins that forward
each call of the function under test (`entry_point`, or every top-level function of the
program when the sample names none) and compares what comes back. The verdict is the
judge's report on a pipe that only the judge holds; the player's exit status and output
are never read as a verdict. docs/rewards.md has the threat model.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import select
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from llmforge import sandbox
from llmforge.sandbox import Limits, Result
from llmforge.verifiers import harness
from llmforge.verifiers.answer import answer_text
from llmforge.verifiers.base import Reward, Score, register

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)
_REPORT_CAP = 1 << 16


def completion_code(completion: str) -> str:
    """The code in a completion: the last fenced block after the reasoning, else all of it."""
    text = answer_text(completion)
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


def sample_prompt(sample: Mapping) -> str:
    prompt = sample.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def build_program(completion: str, sample: Mapping) -> str:
    """The untrusted program for one completion (see the module docstring); no tests in it."""
    code = completion_code(completion)
    entry = sample.get("entry_point")
    defines_entry = entry and re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.M)
    return code if defines_entry else sample_prompt(sample) + code


def functions_under_test(program: str, sample: Mapping) -> list[str] | None:
    """Names the tests may call; None when the program does not parse (unparseable)."""
    try:
        compile(program, "main.py", "exec")
        tree = ast.parse(program, "main.py")
    except (SyntaxError, ValueError):
        return None
    if sample.get("entry_point"):
        return [sample["entry_point"]]
    defs = (ast.FunctionDef, ast.AsyncFunctionDef)
    return sorted({node.name for node in tree.body if isinstance(node, defs)})


def judge_job(sample: Mapping, names: list[str]) -> dict:
    """What the judge gets on its stdin: the trusted code and the names to stand in for."""
    return {
        "prompt": sample_prompt(sample),
        "tests": sample.get("tests") or "",
        "entry_point": sample.get("entry_point"),
        "names": names,
    }


@functools.cache
def _harness_source() -> str:
    return Path(harness.__file__).read_text(encoding="utf-8")


def run_test(program: str, job: dict, limits: Limits = Limits()) -> Result:
    """Judge `program` by `job` in two sandboxed interpreters; `Result.status` is the verdict."""
    with tempfile.TemporaryDirectory(prefix="llmforge-code-") as tmp:
        base = Path(tmp)
        (base / "player").mkdir()
        (base / "player" / "main.py").write_text(program, encoding="utf-8")
        request, answer, report = os.pipe(), os.pipe(), os.pipe()
        try:
            player = sandbox.launch(
                f"{_harness_source()}\nplay({request[0]}, {answer[1]})\n",
                base, "player", limits, pass_fds=(request[0], answer[1]),
            )  # fmt: skip
            judge = sandbox.launch(
                f"{_harness_source()}\njudge({request[1]}, {answer[0]}, {report[1]})\n",
                base, "judge", limits, pass_fds=(request[1], answer[0], report[1]),
                stdin=subprocess.PIPE,
            )  # fmt: skip
        finally:
            for fd in (*request, *answer, report[1]):
                os.close(fd)
        return _await_verdict(player, judge, json.dumps(job).encode(), report[0], limits)


def _await_verdict(player, judge, job: bytes, report_fd: int, limits: Limits) -> Result:
    deadline = judge.started + limits.wall_s
    try:
        try:
            judge.proc.stdin.write(job)
            judge.proc.stdin.close()
        except BrokenPipeError:
            pass
        raw, timed_out = _read_until_eof(report_fd, deadline)
    finally:
        os.close(report_fd)
        player.kill()  # whatever it still runs (threads, loops) has no say any more
        judge_rc, judge_late = judge.finish(deadline)
    stdout, player_err = player.output()
    report = _parse_report(raw)
    status = _status(report, timed_out or judge_late, player_err)
    error = report.get("error") if report else "the judge wrote no report"
    stderr = f"verdict: {error or 'all tests passed'}\n{player_err}"
    return Result(status, judge_rc, stdout, stderr, time.monotonic() - judge.started)


def _read_until_eof(fd: int, deadline: float) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while size <= _REPORT_CAP:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b"".join(chunks), True
        chunk = os.read(fd, 1 << 14)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks), False


def _parse_report(raw: bytes) -> dict | None:
    try:
        report = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return report if isinstance(report, dict) else None


def _status(report: dict | None, timed_out: bool, player_err: str) -> sandbox.Status:
    if report is not None and report.get("passed") is True:
        return "passed"
    if timed_out:
        return "timeout"
    error = str((report or {}).get("error") or "")
    if "MemoryError" in error or "MemoryError" in player_err.rsplit("Traceback", 1)[-1]:
        return "memory"
    return "failed"


@register("code")
class CodeTests(Reward):
    """Pass/fail of the sample's tests against the completion, judged across the sandbox."""

    def __init__(
        self, timeout_s: float = 10.0, cpu_s: int = 5, memory_mb: int = 1024, workers: int = 4
    ):
        self.limits = Limits(wall_s=timeout_s, cpu_s=cpu_s, memory_mb=memory_mb)
        self.workers = workers

    def __call__(self, completion: str, sample: Mapping, length: int | None = None) -> Score:
        return self.batch([completion], [sample])[0]

    def batch(self, completions: Sequence[str], samples: Sequence[Mapping], lengths=None):
        jobs = []
        scores = [Score(0.0, parseable=False)] * len(completions)
        for i, (completion, sample) in enumerate(zip(completions, samples, strict=True)):
            program = build_program(completion, sample)
            names = functions_under_test(program, sample)
            if names is not None:
                jobs.append((i, program, judge_job(sample, names)))
        results = sandbox.parallel(lambda j: run_test(j[1], j[2], self.limits), jobs, self.workers)
        for (i, _, _), result in zip(jobs, results, strict=True):
            scores[i] = Score(1.0 if result.passed else 0.0, parseable=True)
        return scores
