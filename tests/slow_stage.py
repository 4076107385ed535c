"""A test-only stage that writes files slowly, run as a subprocess to test kills and locks.

python -m tests.slow_stage OUT SECONDS
"""

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from llmforge.config import param
from llmforge.stage import Role, Stage, execute, run_cli


@dataclass(frozen=True)
class Config:
    seconds: float = param(0.0, "how long to sleep between the two payload files")


def run(cfg: Config, inputs, out) -> dict:
    (out.dir / "first.txt").write_text("one")
    marker = out.work / "started"
    resumed = marker.exists()
    marker.write_text("x")
    time.sleep(cfg.seconds)
    (out.dir / "second.txt").write_text("two")
    return {"resumed": resumed}


SLOW = Stage(
    name="slow",
    kind="corpus",
    config=Config,
    run=run,
    roles={"data": Role(kinds=("raw", "corpus"), min=0, max=None)},
    default_role="data",
)

if __name__ == "__main__":
    out, seconds = Path(sys.argv[1]), sys.argv[2]
    run_cli(lambda: execute(SLOW, [], sets=[f"seconds={seconds}"], out=out))
