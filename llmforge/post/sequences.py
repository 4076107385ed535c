"""Sampled sequences as tensors, shared by the on-policy loops (distillation, online DPO).

A sample is a `gen.Completion`: prompt token ids plus completion token ids. `right_pad`
lays a batch of them out as one right-padded tensor, and `completion_slices` says where
each completion's tokens are predicted (the logits at position i predict token i + 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def right_pad(samples: Sequence, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask) of prompt + completion per sample, right-padded."""
    seqs = [list(s.prompt_token_ids) + list(s.token_ids) for s in samples]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)], mask[row, : len(seq)] = torch.tensor(seq), 1
    return ids, mask


def completion_slices(samples: Sequence) -> list[slice]:
    """Per sample, the logit positions that predict its completion tokens."""
    out = []
    for s in samples:
        p = len(s.prompt_token_ids)
        out.append(slice(p - 1, p - 1 + len(s.token_ids)))
    return out


def completion_logps(model, samples: Sequence, pad_id: int) -> torch.Tensor:
    """Summed log-probability of each sample's completion tokens under `model` (with grad
    when the model is training and grad is enabled)."""
    ids, mask = right_pad(samples, pad_id)
    logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                   use_cache=False).logits.float()  # fmt: skip
    logp = torch.log_softmax(logits, dim=-1)
    sums = []
    for row, (s, at) in enumerate(zip(samples, completion_slices(samples), strict=True)):
        tokens = torch.tensor(s.token_ids, device=logp.device)[:, None]
        sums.append(logp[row, at].gather(-1, tokens).sum())
    return torch.stack(sums)
