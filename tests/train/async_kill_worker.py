"""Child process of the kill -9 test: an asynchronous checkpoint at step 2 completes; the one
at step 4 writes its shards and then stalls before its metadata, until the test kills us.

    python -m tests.train.async_kill_worker TOKENS WORK
"""

import sys
import time
from pathlib import Path

from torch.distributed.checkpoint import FileSystemWriter

from tests.train.engine_helpers import checkpoint_loop

_write_data = FileSystemWriter.write_data


def stalling_write_data(self, plan, planner):
    written = _write_data(self, plan, planner)
    if "ckpt-00000004" in str(self.path):
        written.wait()
        print("writing ckpt-00000004", flush=True)
        time.sleep(120)
    return written


if __name__ == "__main__":
    FileSystemWriter.write_data = stalling_write_data
    tokens, work = map(Path, sys.argv[1:3])
    checkpoint_loop(tokens, work, steps=6, every=2, async_checkpoint=True).run()
