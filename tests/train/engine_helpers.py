"""Builders shared by the engine tests: a tiny model, a loader over fake tokens, a Run."""

from pathlib import Path

import numpy as np
import torch

from llmforge import artifact
from llmforge.data.labelled_tokens import VOCAB
from llmforge.data.loader import DataConfig, PackedLoader, Source
from llmforge.data.tokens import TokenStore
from llmforge.model.gpt import GPT, ModelConfig
from llmforge.train.config import OptimConfig, ScheduleConfig, SpikeConfig, TrainConfig
from llmforge.train.engine import TrainSpec

TINY = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                   ffn_hidden=64, max_seq_len=64)  # fmt: skip


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(TINY)


def tiny_loader(root: Path, batch_size: int = 4, seq_len: int = 32, seed: int = 0, **kw):
    source = Source([TokenStore(root, "train")])
    weights = [np.ones(len(source.domains)) / len(source.domains)]
    return PackedLoader(source, weights, [10**6], batch_size, seq_len, seed=seed, **kw)


def spec(root: Path, steps: int, **train) -> TrainSpec:
    defaults = dict(steps=steps, batch_size=4, seq_len=32, precision="fp32", log_every=1,
                    checkpoint_every=0, peak_probe_s=0.0)  # fmt: skip
    return TrainSpec(
        data=DataConfig(val_batches=1),
        train=TrainConfig(**{**defaults, **train}),
        optim=OptimConfig(lr=3e-3),
        schedule=ScheduleConfig(kind="constant", warmup_steps=0),
        spike=SpikeConfig(),
        tokens=[root],
    )


def make_run(out: Path, rank: int = 0, world: int = 1) -> artifact.Run:
    run = artifact.Run(out, "test", "model", "pretrain", {}, [], rank, world)
    run.dir.mkdir(parents=True, exist_ok=True)
    return run


def checkpoint_loop(tokens: Path, work: Path, steps: int = 6, every: int = 0, *, rank: int = 0,
                    world: int = 1, accum: int = 1, batch_size: int = 4, wrap=None, **train):  # fmt: skip
    """A Loop over the tiny model that checkpoints every `every` steps into `work`.

    `wrap` (e.g. FSDP's `parallelize`) is applied to the model; `train` are TrainConfig keys.
    """
    from llmforge.train.callbacks import Checkpointer
    from llmforge.train.loop import Loop
    from llmforge.train.optim import build_optimizers
    from llmforge.train.schedule import build_schedulers

    model = tiny_model()
    model = wrap(model) if wrap else model
    opts = build_optimizers(model, OptimConfig(lr=1e-2))
    scheds = build_schedulers(opts, ScheduleConfig(kind="constant", warmup_steps=0), steps)
    loader = tiny_loader(tokens, batch_size, grad_accum=accum, rank=rank, world_size=world)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, seq_len=32, grad_accum=accum,
                      precision="fp32", **train)  # fmt: skip
    return Loop(model, model, opts, scheds, loader, steps, cfg, work, [Checkpointer(every)])
