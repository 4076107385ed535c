"""CPU throughput of the pretrain engine against a minimal plain PyTorch loop.

Both train the same GPT on the same packed batches (same loader, seed and precision); the
engine adds its loop, callbacks (spike guard, metrics, MoE bias) and the guarded step.
Runs alternate (plain, engine, plain, engine, ...) so a shared, noisy CPU hurts both
alike. Prints tokens/s, the ratio engine/plain (goal >= 0.95) and MFU against a matmul
peak measured in this process.

    python bench/pretrain_bench.py [--steps 15] [--rounds 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from llmforge.data.labelled_tokens import make_tokens
from llmforge.data.loader import PackedLoader, Source
from llmforge.data.tokens import TokenStore
from llmforge.model.gpt import GPT, ModelConfig
from llmforge.train.callbacks import Checkpointer, MetricsLogger, MoEBias, SpikeGuard
from llmforge.train.config import OptimConfig, ScheduleConfig, SpikeConfig, TrainConfig
from llmforge.train.loop import Loop
from llmforge.train.metrics import flops_per_token, measure_peak_flops
from llmforge.train.optim import build_optimizers
from llmforge.train.schedule import build_schedulers
from llmforge.train.step import autocast, resolve_precision

CFG = ModelConfig(vocab_size=512, d_model=192, n_layers=4, n_heads=6, n_kv_heads=2,
                  ffn_hidden=512, max_seq_len=256)  # fmt: skip
BATCH, SEQ = 8, 256


def tiny_loader(root: Path, batch_size: int, seq_len: int) -> PackedLoader:
    """Packed batches over every domain of the synthetic tokens, in equal shares."""
    source = Source([TokenStore(root, "train")])
    weights = [np.ones(len(source.domains)) / len(source.domains)]
    return PackedLoader(source, weights, [10**6], batch_size, seq_len, seed=0)


def plain_loop(root: Path, steps: int, precision: str) -> float:
    """The baseline: forward, backward, clip, AdamW step; nothing else."""
    torch.manual_seed(0)
    model = GPT(CFG)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    loader = tiny_loader(root, BATCH, SEQ)
    start = time.perf_counter()
    for _ in range(steps):
        b = loader.next_batch()
        with autocast(precision, torch.device("cpu")):
            loss = model(b.inputs, targets=b.targets, doc_ids=b.doc_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * BATCH * SEQ / (time.perf_counter() - start)


def engine_loop(root: Path, steps: int, precision: str, work: Path) -> float:
    torch.manual_seed(0)
    model = GPT(CFG)
    opts = build_optimizers(model, OptimConfig(lr=1e-3))
    scheds = build_schedulers(opts, ScheduleConfig(warmup_steps=2), steps)
    cfg = TrainConfig(steps=steps, batch_size=BATCH, seq_len=SEQ, precision=precision,
                      log_every=5, checkpoint_every=0)  # fmt: skip
    callbacks = [SpikeGuard(SpikeConfig()), MoEBias(1e-3), MetricsLogger(5, 1.0, 0.0),
                 Checkpointer(0)]  # fmt: skip
    loop = Loop(model, model, opts, scheds, tiny_loader(root, BATCH, SEQ), steps, cfg, work,
                callbacks)  # fmt: skip
    start = time.perf_counter()
    loop.run()
    return steps * BATCH * SEQ / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    precision = resolve_precision("auto", torch.device("cpu"))
    tmp = Path(tempfile.mkdtemp())
    root = make_tokens(tmp / "tokens", {"a": 400, "b": 400}, length=(50, 400))
    peak = measure_peak_flops(precision, seconds=2.0)
    plain, engine = [], []
    for _ in range(args.rounds):
        plain.append(plain_loop(root, args.steps, precision))
        engine.append(engine_loop(root, args.steps, precision, tmp / "work"))
    fpt = flops_per_token(CFG, SEQ)
    params = sum(p.numel() for p in GPT(CFG).parameters())
    print(f"model {params / 1e6:.2f}M params, batch {BATCH}x{SEQ}, {precision}, "
          f"peak {peak / 1e9:.1f} GFLOP/s (measured)")  # fmt: skip
    print(f"{'loop':<8}{'tokens/s (best)':>16}{'MFU':>8}")
    for name, runs in (("plain", plain), ("engine", engine)):
        print(f"{name:<8}{max(runs):>16.0f}{max(runs) * fpt / peak:>8.1%}")
    print(f"ratio engine/plain: {max(engine) / max(plain):.3f} (goal >= 0.95)")


if __name__ == "__main__":
    main()
