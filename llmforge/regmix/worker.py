"""Command-line entry of one proxy run: `python -m llmforge.regmix.worker TASK.json ...`.

Slurm array tasks call it (one task file per array index); it trains each proxy whose
result file is missing and writes that result.
"""

from __future__ import annotations

import sys
from pathlib import Path

from llmforge.regmix.proxies import pending, run_task


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m llmforge.regmix.worker TASK.json [TASK.json ...]", file=sys.stderr)
        return 2
    for task in pending([Path(a) for a in argv]):
        run_task(task)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
