"""Benchmark: checkpoint save time and peak rank-0 memory on 2 gloo ranks, full gather onto
rank 0 (llmforge's format 1) against sharded DCP (llmforge's format 2), sync and async.

    .venv/bin/python bench/checkpoint_bench.py [--d-model 1024 --layers 12 --vocab 32768]

Each mode runs in a fresh pair of processes: build the GPT, shard it with FSDP2, take one
AdamW step (so the optimizer holds its state), then save `--saves` checkpoints. Per save:
how long training is blocked, how long until the checkpoint is complete on disk, and on
rank 0 the rise of resident memory above what it held before the save (sampled every
5 ms). The gather baseline is the format-1 code: full model and optimizer state dicts
gathered to rank 0 (CPU offload) and `torch.save`d there; it fsyncs like DCP does, so both
sides pay for the disk.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRSS:
    """Highest resident set size seen while the block runs, sampled every 5 ms."""

    def __enter__(self):
        self.base = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def rise_gb(self) -> float:
        return (self.peak - self.base) / 1e9


def build(args):
    from llmforge.model.gpt import GPT, ModelConfig
    from llmforge.model.parallelize import parallelize
    from llmforge.train.config import OptimConfig
    from llmforge.train.optim import build_optimizers

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers,
                      n_heads=16, n_kv_heads=4, ffn_hidden=args.d_model * 11 // 4,
                      max_seq_len=64)  # fmt: skip
    model = parallelize(GPT(cfg))
    (opt,) = build_optimizers(model, OptimConfig())
    tokens = torch.randint(0, args.vocab, (1, 33))
    model(tokens[:, :-1], targets=tokens[:, 1:]).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return model, opt, sum(p.numel() for p in GPT(cfg).parameters())


def save_gathered(model, opt, path: Path) -> None:
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    from llmforge.train.checkpoint import FULL

    state = {
        "model": get_model_state_dict(model, options=FULL),
        "optim": get_optimizer_state_dict(model, [opt], options=FULL),
    }
    if dist.get_rank() == 0:
        path.mkdir(parents=True, exist_ok=True)
        with open(path / "state.pt", "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    dist.barrier()


def worker(rank: int, port: int, mode: str, args, root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2,
                            timeout=datetime.timedelta(minutes=10))  # fmt: skip
    torch.set_num_threads(1)
    from llmforge.train.checkpoint import CheckpointWriter

    model, opt, params = build(args)
    writer = CheckpointWriter(Path(root), keep=1, asynchronous=mode == "sharded-async")
    rows = []
    for i in range(args.saves):
        dist.barrier()
        with PeakRSS() as mem:
            start = time.perf_counter()
            if mode == "gather":
                save_gathered(model, opt, Path(root) / f"ckpt-{i}")
            else:
                writer.save(i + 1, model, [opt], [], {})
            blocked = time.perf_counter() - start
            writer.wait()
            dist.barrier()
            done = time.perf_counter() - start
        rows.append((blocked, done, mem.rise_gb))
        size = sum(f.stat().st_size for f in Path(root).rglob("*") if f.is_file())
        dist.barrier()
        if rank == 0:
            shutil.rmtree(root, ignore_errors=True)
    writer.close()
    if rank == 0:
        torch.save({"rows": rows, "params": params, "bytes": size}, out)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--saves", type=int, default=2)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/tmp")) as tmp:
        for mode in ("gather", "sharded", "sharded-async"):
            root, out = Path(tmp) / mode, Path(tmp) / f"{mode}.pt"
            mp.spawn(worker, args=(free_port(), mode, args, str(root), str(out)), nprocs=2)
            results[mode] = torch.load(out, weights_only=True)
    params = results["gather"]["params"]
    print(f"{params / 1e6:.0f}M params, AdamW, fp32, 2 gloo ranks on {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'':16}{'blocked s':>10}{'complete s':>11}{'rank-0 peak +GB':>16}{'GB on disk':>11}")
    for mode, r in results.items():
        best = min(r["rows"], key=lambda x: x[1])  # the least disturbed of the saves
        peak = max(x[2] for x in r["rows"])
        print(f"{mode:16}{best[0]:10.2f}{best[1]:11.2f}{peak:16.2f}{r['bytes'] / 1e9:11.2f}")


if __name__ == "__main__":
    main()
