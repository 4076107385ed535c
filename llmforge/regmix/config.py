"""Config sections of the regmix stage: proposals, proxies, target, fit, solver, Slurm.

The defaults are sized for the CPU demo (32 proxies of ~200k parameters, a few dozen steps
each). On a cluster raise `proposals.n_proxies`, the proxy model and `proxy.steps`, and set
`slurm.enabled`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmforge.config import check, param
from llmforge.model.gpt import ModelConfig
from llmforge.slurm import ArrayConfig

PROXY_MODEL = ModelConfig(
    vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=172,
    max_seq_len=256,
)  # fmt: skip


@dataclass(frozen=True)
class ProposalConfig:
    """How the K proxy mixtures are drawn: a Dirichlet centred on the natural token shares."""

    n_proxies: int = param(32, "proxy models (K) to train on random mixtures")
    concentration: list[float] = param(
        [0.3, 1.0, 3.0],
        "Dirichlet alpha = c * n_domains * natural share; proposals cycle through these c "
        "(small c: spiky mixtures, large c: close to natural)",
    )
    caps: dict[str, float] = param({}, "domain -> largest weight it may get (empty: none)")
    max_epochs: float = param(
        4.0, "no domain is repeated more than this many times within a token budget"
    )
    seed: int = param(0, "seed of the proposals and of the solver's samples")

    def __post_init__(self):
        check(self.n_proxies >= 4, "n_proxies", "must be >= 4 (the fit needs data)")
        check(len(self.concentration) >= 1, "concentration", "needs at least one value")
        check(all(c > 0 for c in self.concentration), "concentration", "each must be > 0")
        for domain, cap in self.caps.items():
            check(0 < cap <= 1, f"caps.{domain}", "must be in (0, 1]")
        check(self.max_epochs > 0, "max_epochs", "must be > 0")


@dataclass(frozen=True)
class ProxyConfig:
    """The proxy models and how they are trained (with the pretrain engine)."""

    model: ModelConfig = param(PROXY_MODEL, "proxy model shape (vocab_size follows the tokens)")
    steps: int = param(60, "optimizer steps per proxy")
    batch_size: int = param(8, "rows per step")
    seq_len: int = param(128, "tokens per row")
    lr: float = param(3e-3, "peak learning rate (WSD schedule)")
    warmup_steps: int = param(6, "linear warmup steps")
    precision: Literal["auto", "bf16", "fp32"] = param("fp32", "autocast dtype of the proxies")
    val_batches: int = param(6, "held-out batches per domain for the target")
    seed: int = param(0, "init seed, the same for every proxy so only the mixture differs")
    checkpoint_every: int = param(0, "checkpoint each proxy every N steps (0 = rerun it whole)")
    workers: int = param(0, "proxies trained at once as local processes (0 = cores / threads)")
    threads: int = param(1, "torch threads per local worker")

    def __post_init__(self):
        check(self.workers >= 0, "workers", "must be >= 0")
        for key in ("steps", "batch_size", "seq_len", "val_batches", "threads"):
            check(getattr(self, key) >= 1, key, "must be >= 1")
        check(self.lr > 0, "lr", "must be > 0")
        check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        check(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0")
        check(self.seq_len <= self.model.max_seq_len, "seq_len", "must be <= model.max_seq_len")

    @property
    def tokens(self) -> int:
        """Training tokens of one proxy."""
        return self.steps * self.batch_size * self.seq_len


@dataclass(frozen=True)
class TargetConfig:
    """What the mixture should minimise, per proxy:

    target = loss_weight * sum_d w_d * val_loss_d / sum_d w_d  +  sum_m metrics[m] * value_m

    The first part is the validation loss (nats/token) on the tokens' val split. The second
    takes figures from the suite of an `eval=` artifact, run on every proxy: `m` is a
    dotted path into a model entry of that artifact's results.json, e.g.
    `loss.per_domain.math.bpb` or `tasks.math.all.avg@4`. The target is minimised, so give
    higher-is-better metrics a negative weight (OLMo 3 mixes bits-per-byte with task scores).
    """

    domain_weights: dict[str, float] = param(
        {}, "domain -> weight of its validation loss (empty: equal over all domains)"
    )
    loss_weight: float = param(
        1.0, "weight of the validation-loss part (0: only the eval metrics count)"
    )
    metrics: dict[str, float] = param(
        {},
        "eval metric path -> weight, from the eval= artifact's results.json (negative for "
        "higher-is-better metrics such as accuracy)",
    )

    def __post_init__(self):
        for domain, w in self.domain_weights.items():
            check(w >= 0, f"domain_weights.{domain}", "must be >= 0")
        if self.domain_weights:
            check(sum(self.domain_weights.values()) > 0, "domain_weights", "must not all be 0")
        check(self.loss_weight >= 0, "loss_weight", "must be >= 0")
        for path, w in self.metrics.items():
            check(w != 0, f"metrics.{path}", "a weight of 0 does nothing; drop the metric")
        check(
            self.loss_weight > 0 or bool(self.metrics),
            "loss_weight",
            "is 0 and no metrics are set: the target would be constant",
        )


@dataclass(frozen=True)
class FitConfig:
    """The regression from mixture weights to target, and its cross-validation."""

    model: Literal["auto", "lightgbm", "linear"] = param(
        "auto", "regressor used to solve; auto = the better cross-validated Spearman rho"
    )
    folds: int = param(5, "k of the k-fold cross-validation")
    seed: int = param(0, "seed of the folds and of LightGBM")
    lgbm_estimators: int = param(300, "LightGBM boosting rounds")
    lgbm_learning_rate: float = param(0.05, "LightGBM learning rate")
    lgbm_leaves: int = param(7, "LightGBM leaves per tree")
    lgbm_min_child: int = param(3, "LightGBM minimum proxies per leaf")
    ridge_alpha: float = param(1e-4, "L2 penalty of the linear model")

    def __post_init__(self):
        check(self.folds >= 2, "folds", "must be >= 2")
        check(self.lgbm_estimators >= 1, "lgbm_estimators", "must be >= 1")
        check(self.lgbm_learning_rate > 0, "lgbm_learning_rate", "must be > 0")
        check(self.lgbm_leaves >= 2, "lgbm_leaves", "must be >= 2")
        check(self.lgbm_min_child >= 1, "lgbm_min_child", "must be >= 1")
        check(self.ridge_alpha >= 0, "ridge_alpha", "must be >= 0")


@dataclass(frozen=True)
class SolveConfig:
    """Search for the best mixture under the fitted model."""

    samples: int = param(100_000, "random mixtures scored with the fitted model")
    top_k: int = param(100, "the published mixture is the mean of the k best-scored")
    target_tokens: int = param(
        0, "token budget of the real run, for the max_epochs caps (0 = the proxy budget)"
    )

    def __post_init__(self):
        check(self.samples >= 1, "samples", "must be >= 1")
        check(1 <= self.top_k <= self.samples, "top_k", "must be in [1, samples]")
        check(self.target_tokens >= 0, "target_tokens", "must be >= 0")


# Train the proxies as a Slurm job array instead of local processes.
ProxySlurmConfig = ArrayConfig
