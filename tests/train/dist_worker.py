"""Worker for the 2-process gloo test: FSDP2 training must match one process on the same data.

Each rank trains on its half of a fixed global batch; rank 0 also trains an unsharded copy
on the whole batch. Weights after three AdamW steps must agree.
"""

import os

import torch

from llmforge import distributed
from llmforge.data.loader import Batch
from llmforge.model.parallelize import parallelize
from llmforge.train.config import OptimConfig
from llmforge.train.optim import build_optimizers
from llmforge.train.step import train_step
from tests.train.engine_helpers import tiny_model


def global_batch(step: int) -> Batch:
    g = torch.Generator().manual_seed(step)
    tokens = torch.randint(1, 500, (4, 33), generator=g)
    zeros = torch.zeros(4, 32, dtype=torch.long)
    return Batch(tokens[:, :-1], tokens[:, 1:], zeros, zeros)


def run(rank: int, world: int, port: int, result_file: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    distributed.init(rank=rank, world_size=world)
    checked = distributed.check_installed()  # conftest turns the device discipline check on
    torch.manual_seed(0)
    model = parallelize(tiny_model(seed=0))
    opts = build_optimizers(model, OptimConfig(lr=1e-2))
    losses = []
    for step in range(3):
        half = Batch(*(t[rank::world] for t in global_batch(step)))
        losses.append(train_step(model, opts, [], [half], precision="fp32").loss)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if rank == 0:
        ref = tiny_model(seed=0)
        ref_opts = build_optimizers(ref, OptimConfig(lr=1e-2))
        ref_losses = []
        distributed.destroy()  # the reference runs without collectives
        for step in range(3):
            ref_losses.append(
                train_step(ref, ref_opts, [], [global_batch(step)], precision="fp32").loss
            )
        diff = max((full[k] - v).abs().max().item() for k, v in ref.state_dict().items())
        result = {"losses": losses, "ref_losses": ref_losses, "max_diff": diff, "checked": checked}
        torch.save(result, result_file)
    else:
        distributed.destroy()
