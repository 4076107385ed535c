"""Options of rlvr's extras: the PTX loss, SRFT and multi-turn tool use (docs/stages/rlvr.md).

Each is off unless asked for: PTX with a `ptx=TOKENS` input, SRFT with a `demos=CHAT_DATA`
input, tools with `tools.enabled=true`. Kept free of torch, like `rl_config`, so `--help`
and config checks never import it.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmforge.config import check, param
from llmforge.gen.tools import ToolLimits


@dataclass(frozen=True)
class PTXArgs:
    """Pretraining cross-entropy on a curated tokens artifact, mixed into every RL step."""

    weight: float = param(
        0.1, "weight of the PTX cross-entropy added to the RL loss of each optimizer step "
        "(Kimi K2 names no value; 0.1 keeps it below a typical policy-gradient term)",
    )  # fmt: skip
    batch_size: int = param(4, "PTX rows per optimizer step")
    seq_len: int = param(512, "tokens per PTX row (documents packed end to end)")
    buffer_docs: int = param(64, "random-sequential buffer per domain, as in pretrain")
    eval_every: int = param(
        10, "held-out PTX loss on the tokens artifact's val split every N steps; 0: never"
    )
    val_batches: int = param(2, "held-out batches per domain for that loss")

    def __post_init__(self):
        check(self.weight > 0, "weight", "must be > 0 (leave out the ptx input to switch PTX off)")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.seq_len >= 2, "seq_len", "must be >= 2")
        check(self.buffer_docs >= 1, "buffer_docs", "must be >= 1")
        check(self.eval_every >= 0, "eval_every", "must be >= 0")
        check(self.val_batches >= 1, "val_batches", "must be >= 1")


@dataclass(frozen=True)
class SRFTArgs:
    """SRFT (Fu et al. 2025): SFT on demonstrations and RL on rollouts in one step, weighted
    by the policy's entropy H: w_sft = sft_coef * exp(-H), w_rl = rl_coef * exp(H). Each
    demonstration also joins its prompt's group as an off-policy member (llmforge.post.srft)."""

    sft_coef: float = param(0.5, "w_sft = sft_coef * exp(-H) on the demonstrations' NLL")
    rl_coef: float = param(0.1, "w_rl = rl_coef * exp(H) on rollouts with positive advantage")
    entropy_weighting: bool = param(
        True, "scale by exp(-H) and exp(H); false: the coefficients alone"
    )

    def __post_init__(self):
        check(self.sft_coef >= 0, "sft_coef", "must be >= 0")
        check(self.rl_coef > 0, "rl_coef", "must be > 0")


@dataclass(frozen=True)
class ToolArgs(ToolLimits):
    """Multi-turn rollouts with a Python tool that runs in the sandbox (`llmforge.gen.tools`)."""

    enabled: bool = param(False, "let the policy call the `python` tool (docs/stages/rlvr.md)")
