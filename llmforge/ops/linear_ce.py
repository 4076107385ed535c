"""Linear + cross-entropy without materialising the [tokens x vocab] logits."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from llmforge.ops.reference import linear_cross_entropy_reference


class LinearCEOutput(NamedTuple):
    """Loss plus its parts and (optionally) per-token log-probs of the targets."""

    loss: Tensor
    ce: Tensor
    z: Tensor
    logprobs: Tensor | None


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    ignore_index: int = -100,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    reduction: str = "mean",
    chunk_size: int = 2048,
    return_logprobs: bool = False,
) -> LinearCEOutput:
    """Temporary: the naive path until the chunked one lands."""
    loss, ce, z, logprobs = linear_cross_entropy_reference(
        hidden,
        weight,
        targets,
        bias=bias,
        ignore_index=ignore_index,
        z_loss=z_loss,
        softcap=softcap,
        temperature=temperature,
        reduction=reduction,
    )
    return LinearCEOutput(loss, ce.detach(), z.detach(), logprobs if return_logprobs else None)
