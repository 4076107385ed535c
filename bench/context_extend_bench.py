"""Does context-extend help at 2x the original length? Loss on held-out packed rows.

Pretrains a small model at length L (cross-document attention, so positions up to L are
seen), then runs the context-extend stage to 2L with a larger RoPE base (ABF). Both are
evaluated on the same held-out rows at L and at 2L; the base model must extrapolate its
positions at 2L, the extended one was trained there.

    PYTHONPATH=. python bench/context_extend_bench.py TOKENS_ARTIFACT [--length 64]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from llmforge.data.loader import validation_batches
from llmforge.data.tokens import TokenStore
from llmforge.model.hf import load_gpt
from llmforge.stage import execute
from stages.context_extend import STAGE as EXTEND
from stages.pretrain import STAGE as PRETRAIN

MODEL = ["model.vocab_size=512", "model.d_model=128", "model.n_layers=4", "model.n_heads=4",
         "model.n_kv_heads=2", "model.ffn_hidden=344"]  # fmt: skip
TRAIN = ["train.batch_size=8", "train.precision=auto", "train.peak_probe_s=0",
         "train.log_every=10", "train.checkpoint_every=0", "optim.lr=0.002"]  # fmt: skip


@torch.no_grad()
def row_loss(model, tokens: Path, length: int) -> float:
    """Mean loss on held-out rows of `length` tokens, documents attending to each other."""
    store, total, count = TokenStore(tokens, "val"), 0.0, 0
    for domain in store.domains:
        for b in validation_batches(store, domain, 8, length, 4, mask=False):
            n = int((b.targets != -100).sum())
            total += float(model(b.inputs, targets=b.targets).ce) * n
            count += n
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tokens", type=Path)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    short, long_ = args.length, 2 * args.length
    tmp = Path(tempfile.mkdtemp())
    base = execute(PRETRAIN, [str(args.tokens)], out=tmp / "base", sets=[
        *MODEL, *TRAIN, f"model.max_seq_len={short}", f"train.seq_len={short}",
        f"train.steps={args.steps}", "data.intra_doc_mask=false", "model.rope_theta=10000",
    ])  # fmt: skip
    extended = execute(EXTEND, [str(base), f"tokens={args.tokens}"], out=tmp / "long", sets=[
        *TRAIN, f"train.steps={args.steps // 3}", f"extend.lengths=[{long_}]",
        "extend.rope_theta=[40000]", "schedule.warmup_steps=5", "optim.lr=0.001",
    ])  # fmt: skip
    print(f"{'model':<22}{'loss @ ' + str(short):>12}{'loss @ ' + str(long_):>12}")
    for name, path in (("base", base), ("context-extended", extended)):
        model = load_gpt(path).eval()
        print(f"{name:<22}{row_loss(model, args.tokens, short):>12.3f}"
              f"{row_loss(model, args.tokens, long_):>12.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
