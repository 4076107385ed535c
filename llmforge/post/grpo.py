"""The GRPO/DAPO objective: group advantages, clipped token loss, aggregation, off-policy fix.

Everything here is a pure tensor function so it can be checked against hand-computed
values; the loop that feeds it lives in `llmforge.post.rl_loop`.

Shapes: `B` sequences (prompts x group size), `T` completion tokens (right-padded), `mask`
is 1.0 on tokens that count. The loss is `sum(per_token_loss * token_weights)`, where the
weights encode the aggregation, so a batch can be split into micro-batches freely:

- `grpo`: mean over each sequence's tokens, then mean over sequences (GRPO paper);
- `dapo`: one mean over all tokens of the batch (token-level, DAPO);
- `dr_grpo`: sum over tokens / (B * max_new_tokens), a constant (Dr. GRPO), with advantages
  not divided by the group std.

Off-policy handling, for rollouts sampled by another engine (vLLM) or a stale policy: the
ratio r = p_train / p_sampler per token is either
- `icepop` (default): tokens with r outside [is_low, is_high] = [0.5, 5] are masked out
  (IcePop, Ling team). A token the two engines disagree on that much carries no usable
  gradient, and masking does not bias the kept tokens the way a clipped weight does;
- `tis`: the loss is weighted by min(r, tis_cap) (truncated importance sampling);
- `none`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llmforge.post.rl_config import Aggregation, LossArgs


def group_advantages(rewards: torch.Tensor, group: int | Sequence[int], scale: bool = True):
    """(r - group mean), divided by the group std (+1e-4) when `scale` (not for dr_grpo).

    `group` is the size of every group, or each group's size in order (an SRFT group holds
    its prompt's demonstration as one member more)."""
    if not isinstance(group, int):
        sizes = list(group)
        if len(set(sizes)) > 1:
            parts = torch.split(rewards, sizes)
            return torch.cat([group_advantages(p, len(p), scale) for p in parts])
        group = sizes[0]
    r = rewards.view(-1, group).float()
    adv = r - r.mean(1, keepdim=True)
    if scale:
        adv = adv / (r.std(1, keepdim=True, unbiased=False) + 1e-4)
    return adv.view(-1)


def token_weights(mask: torch.Tensor, aggregation: Aggregation, max_len: int) -> torch.Tensor:
    """Per-token weights whose dot product with a per-token loss is the aggregated loss."""
    mask = mask.float()
    if aggregation == "dapo":
        return mask / mask.sum().clamp(min=1.0)
    if aggregation == "dr_grpo":
        return mask / (mask.shape[0] * max_len)
    lengths = mask.sum(1, keepdim=True)
    live = (lengths > 0).sum().clamp(min=1)
    return mask / lengths.clamp(min=1.0) / live


def clipped_surrogate(ratio, adv, eps_low: float, eps_high: float):
    """-min(r A, clip(r, 1-eps_low, 1+eps_high) A) per token, plus where each side clipped."""
    adv = adv[:, None]
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high)
    loss = -torch.minimum(ratio * adv, clipped * adv)
    hit_low = (ratio < 1 - eps_low) & (adv < 0)
    hit_high = (ratio > 1 + eps_high) & (adv > 0)
    return loss, hit_low, hit_high


def offpolicy_weights(old_logp, sampler_logp, args: LossArgs):
    """(weight, keep) per token from the train/sampler ratio; see the module docstring."""
    ratio = torch.exp(old_logp - sampler_logp)
    ones = torch.ones_like(ratio)
    if args.offpolicy == "icepop":
        return ones, (ratio >= args.is_low) & (ratio <= args.is_high)
    if args.offpolicy == "tis":
        return ratio.clamp(max=args.tis_cap), torch.ones_like(ratio, dtype=torch.bool)
    return ones, torch.ones_like(ratio, dtype=torch.bool)


def policy_loss(logp, old_logp, adv, weights, args: LossArgs, sampler_logp=None, ref_logp=None):
    """The aggregated clipped loss over one (micro-)batch and its statistics.

    `weights` come from `token_weights` over the whole batch (zero on masked tokens).
    """
    ratio = torch.exp(logp - old_logp)
    per_token, hit_low, hit_high = clipped_surrogate(ratio, adv, args.eps_low, args.eps_high)
    live = weights > 0
    if sampler_logp is not None:
        is_weight, keep = offpolicy_weights(old_logp, sampler_logp, args)
        per_token = per_token * is_weight
        weights = weights * keep
    if ref_logp is not None and args.kl_coef > 0:
        delta = ref_logp - logp
        per_token = per_token + args.kl_coef * (torch.exp(delta) - delta - 1)
    loss = (per_token * weights).sum()
    n = live.sum().clamp(min=1)
    stats = {  # 0-d tensors on the batch's device: reading them is the caller's one sync
        "clip_frac_low": (hit_low & live).sum() / n,
        "clip_frac_high": (hit_high & live).sum() / n,
        "offpolicy_masked": ((weights == 0) & live).sum(),
    }
    return loss, stats
