"""Optimizers: AdamW (no decay on embeddings and norms) or Muon + AdamW.

With `name: muon`, `torch.optim.Muon` updates the 2-D matrices inside the transformer
blocks and AdamW the rest (embeddings, head, norms), as in Moonlight/Kimi K2. Muon runs
with `adjust_lr_fn="match_rms_adamw"`, so its update RMS matches AdamW's and both share
one peak lr.
"""

from __future__ import annotations

import torch
from torch import nn

from llmforge.train.config import OptimConfig


def adamw(groups: list[dict], cfg: OptimConfig, lr: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps)


def decay_groups(params: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """Decay on matrices only: never on embeddings, norms or biases."""
    decay = [p for n, p in params if p.ndim >= 2 and "embed" not in n]
    keep = [p for n, p in params if not (p.ndim >= 2 and "embed" not in n)]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": keep, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizers(model: nn.Module, cfg: OptimConfig) -> list[torch.optim.Optimizer]:
    """One optimizer (AdamW) or two (Muon for hidden matrices, AdamW for the rest).

    Works on a plain or an FSDP-wrapped model: parameters are selected by name, which
    FSDP2 keeps.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if cfg.name == "adamw":
        return [adamw(decay_groups(named, cfg.weight_decay), cfg, cfg.lr)]
    hidden = [p for n, p in named if p.ndim == 2 and _in_blocks(n)]
    rest = [(n, p) for n, p in named if not (p.ndim == 2 and _in_blocks(n))]
    muon = torch.optim.Muon(
        hidden, lr=cfg.lr * cfg.muon_lr_scale, weight_decay=cfg.weight_decay,
        momentum=cfg.muon_momentum, adjust_lr_fn="match_rms_adamw",
    )  # fmt: skip
    return [muon, adamw(decay_groups(rest, cfg.weight_decay), cfg, cfg.lr)]


def _in_blocks(name: str) -> bool:
    return name.startswith("layers.") or ".layers." in name
