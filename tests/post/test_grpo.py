"""GRPO/DAPO maths against hand-computed values: advantages, aggregation, clipping, IS."""

import pytest
import torch

from llmforge.post.grpo import (
    clipped_surrogate,
    group_advantages,
    offpolicy_weights,
    policy_loss,
    token_weights,
)
from llmforge.post.rl_config import LossArgs

MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 100.0, 100.0, 100.0]])


def test_group_advantages():
    adv = group_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0, 2.0, 2.0, 2.0]), group=4)
    assert adv[:4].tolist() == pytest.approx([0.5 / 0.5001, -0.5 / 0.5001] * 2, rel=1e-4)
    assert adv[4:].abs().max() == 0
    raw = group_advantages(torch.tensor([3.0, 1.0]), group=2, scale=False)
    assert raw.tolist() == [1.0, -1.0]


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("grpo", ((1 + 2 + 3) / 3 + 4 / 1) / 2),  # mean per sequence, then over sequences
        ("dapo", (1 + 2 + 3 + 4) / 4),  # one mean over all tokens
        ("dr_grpo", (1 + 2 + 3 + 4) / (2 * 8)),
    ],  # constant: B * max_new_tokens
)
def test_aggregation_variants(how, expected):
    weights = token_weights(MASK, how, max_len=8)
    assert (PER_TOKEN * weights).sum().item() == pytest.approx(expected)


def test_grpo_aggregation_skips_fully_masked_sequences():
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    per_token = torch.tensor([[2.0, 4.0], [9.0, 9.0]])
    assert (per_token * token_weights(mask, "grpo", 2)).sum().item() == pytest.approx(3.0)


def test_clip_higher_is_asymmetric():
    ratio = torch.tensor([[0.5, 1.25, 1.4, 0.7]])
    loss_pos, low, high = clipped_surrogate(ratio, torch.tensor([1.0]), 0.2, 0.28)
    # positive advantage: gains capped at 1.28; 1.25 is still inside the wider upper range
    assert loss_pos[0].tolist() == pytest.approx([-0.5, -1.25, -1.28, -0.7])
    assert high[0].tolist() == [False, False, True, False] and not low.any()
    loss_neg, low, high = clipped_surrogate(ratio, torch.tensor([-1.0]), 0.2, 0.28)
    # negative advantage: ratios below 0.8 are clipped at 0.8 (the min picks the larger loss)
    assert loss_neg[0].tolist() == pytest.approx([0.8, 1.25, 1.4, 0.8])
    assert low[0].tolist() == [True, False, False, True] and not high.any()


def test_on_policy_gradient_is_advantage_weighted_logprob():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    weights = token_weights(torch.ones(1, 2), "dapo", 2)
    loss, stats = policy_loss(logp, logp.detach(), torch.tensor([2.0]), weights, LossArgs())
    loss.backward()
    assert loss.item() == pytest.approx(-2.0)
    assert logp.grad.tolist() == [[-1.0, -1.0]]  # -A * w per token
    assert stats["clip_frac_low"] == stats["clip_frac_high"] == 0


def test_icepop_masks_and_tis_caps():
    old = torch.log(torch.tensor([[0.5, 0.5, 0.5]]))
    sampler = torch.log(torch.tensor([[0.5, 0.05, 0.9]]))  # ratios 1, 10, 0.556
    _, keep = offpolicy_weights(old, sampler, LossArgs(offpolicy="icepop"))
    assert keep.tolist() == [[True, False, True]]
    weight, keep = offpolicy_weights(old, sampler, LossArgs(offpolicy="tis", tis_cap=2.0))
    assert weight[0].tolist() == pytest.approx([1.0, 2.0, 0.5 / 0.9]) and keep.all()
    logp = old.clone().requires_grad_(True)
    weights = token_weights(torch.ones(1, 3), "dapo", 3)
    _, stats = policy_loss(logp, old, torch.tensor([1.0]), weights, LossArgs(), sampler)
    assert stats["offpolicy_masked"] == 1


def test_kl_term_is_zero_at_reference_and_positive_away():
    logp = torch.tensor([[-1.0, -1.0]])
    weights = token_weights(torch.ones(1, 2), "dapo", 2)
    args = LossArgs(kl_coef=0.5)
    base, _ = policy_loss(logp, logp, torch.tensor([0.0]), weights, args, ref_logp=logp)
    moved, _ = policy_loss(logp, logp, torch.tensor([0.0]), weights, args, ref_logp=logp - 1)
    assert base.item() == pytest.approx(0.0) and moved.item() > 0


def test_bad_loss_args():
    from llmforge.errors import ConfigError

    with pytest.raises(ConfigError):
        LossArgs(eps_low=1.5)
    with pytest.raises(ConfigError):
        LossArgs(is_low=2.0)
