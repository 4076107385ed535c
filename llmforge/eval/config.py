"""The eval stage's configuration and how it becomes a `suite.Plan`.

It lives in the library (not in stages/eval.py) because regmix runs the suite an eval
artifact was made with on each of its proxy models, from a worker process: the config
recorded in that artifact's manifest plus its input paths rebuild the same Plan here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llmforge import distributed
from llmforge.causal_lm import ModelArgs
from llmforge.config import check, param
from llmforge.data import sources
from llmforge.errors import BadInput
from llmforge.eval import generative, longctx, suite
from llmforge.eval import loss as losslib
from llmforge.eval import tasks as tasklib
from llmforge.eval.harness import HarnessConfig
from llmforge.verifiers.judge import JudgeConfig

BUILTINS = (*tasklib.BUILTINS, "long_context")
DEVICE = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")


@dataclass(frozen=True)
class SamplingSection:
    n: int = param(4, "samples per prompt (avg@n, and pass@k for k <= n)")
    k: list[int] = param([1], "k values of the unbiased pass@k")
    temperature: float = param(0.6, "sampling temperature (DeepSeek-R1: do not judge by greedy)")
    top_p: float = param(0.95, "nucleus sampling top-p")
    max_new_tokens: int = param(128, "longest completion in tokens")
    seed: int = param(0, "sampling seed")
    greedy: bool = param(False, "one greedy sample per prompt instead of n sampled ones")

    def __post_init__(self):
        check(self.n >= 1, "n", "must be >= 1")
        check(all(k >= 1 for k in self.k), "k", "every k must be >= 1")
        check(self.temperature > 0, "temperature", "must be > 0 (use greedy=true for greedy)")
        check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        check(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")


@dataclass(frozen=True)
class LossSection:
    seq_len: int = param(256, "window length for loss and bits-per-byte")
    batch_size: int = param(8, "windows per forward pass")
    max_tokens: int = param(100_000, "at most this many tokens per domain")
    text_field: str = param("text", "JSON field holding the text of text= inputs")
    lengths: list[int] = param(
        [], "also report the overall loss on windows of these lengths (by_length), e.g. 2x "
        "the trained context to show what context extension buys",
    )  # fmt: skip
    beyond_context: bool = param(
        False, "measure lengths past a model's declared context too (RoPE models run there)"
    )

    def __post_init__(self):
        check(self.seq_len >= 2, "seq_len", "must be >= 2")
        check(all(n >= 2 for n in self.lengths), "lengths", "every length must be >= 2")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.max_tokens >= 2, "max_tokens", "must be >= 2")


@dataclass(frozen=True)
class BuiltinSection:
    arithmetic_n: int = param(50, "held-out arithmetic and word problems")
    difficulty: int = param(2, "arithmetic difficulty 1-3")
    format_n: int = param(20, "think/no_think format-compliance items")
    humaneval_n: int = param(20, "HumanEval problems (0 = all 164)")
    ifeval_n: int = param(50, "held-out generated instruction-following prompts")
    seed: int = param(0, "seed of the generated problems")

    def __post_init__(self):
        check(self.difficulty in (1, 2, 3), "difficulty", "must be 1, 2 or 3")
        check(self.arithmetic_n >= 1 and self.format_n >= 1, "arithmetic_n", "must be >= 1")
        check(self.humaneval_n >= 0, "humaneval_n", "must be >= 0")
        check(self.ifeval_n >= 1, "ifeval_n", "must be >= 1")


@dataclass(frozen=True)
class LongContextSection:
    probes: list[str] = param(["passkey", "needle"], "probes: passkey, needle")
    lengths: list[int] = param([64, 128, 256], "prompt lengths in tokens")
    depths: list[float] = param([0.0, 0.5, 1.0], "needle depths (0 = start, 1 = end)")
    trials: int = param(2, "haystacks per (length, depth)")
    distractors: int = param(4, "wrong secrets the right one is ranked against")
    beyond_context: bool = param(
        False,
        "also probe lengths past a model's declared context (RoPE models still run there), "
        "to show what context extension buys",
    )

    def __post_init__(self):
        for p in self.probes:
            check(p in longctx.PROBES, "probes", f"unknown probe '{p}' ({list(longctx.PROBES)})")
        check(all(n >= 16 for n in self.lengths), "lengths", "every length must be >= 16")
        check(all(0 <= d <= 1 for d in self.depths), "depths", "depths must be in [0, 1]")
        check(self.trials >= 1, "trials", "must be >= 1")
        check(self.distractors >= 1, "distractors", "must be >= 1")


@dataclass(frozen=True)
class DecontamSection:
    enabled: bool = param(True, "check generative tasks against the models' training data")
    ngram: int = param(13, "n of the word n-grams")
    min_overlap: float = param(0.0, "share of an item's n-grams that must match (0 = any one)")

    def __post_init__(self):
        check(self.ngram >= 1, "ngram", "must be >= 1")
        check(0 <= self.min_overlap <= 1, "min_overlap", "must be in [0, 1]")


@dataclass(frozen=True)
class HarnessSection:
    tasks: list[str] = param([], "lm-eval task names (local YAML via harness=DIR)")
    num_fewshot: int | None = param(None, "few-shot examples (lm-eval default when null)")
    limit: int | None = param(None, "at most this many documents per task")
    batch_size: int = param(8, "lm-eval batch size")
    apply_chat_template: bool = param(False, "render prompts with the chat template")
    include_defaults: bool = param(False, "with harness=DIR, also index lm-eval's own tasks")


@dataclass(frozen=True)
class Config:
    model: ModelArgs = param(ModelArgs(), "how the models load (remote code)")
    tasks: list[str] = param([], f"built-in tasks: {', '.join(BUILTINS)}")
    backend: Literal["transformers", "vllm"] = param("transformers", "generation backend")
    device: str = param(
        "auto", "torch device for the transformers backend, loss, probes and lm-eval: auto = "
        "this rank's (its GPU on a GPU node, else the CPU), or one such as cpu, cuda:1",
    )  # fmt: skip
    batch_size: int = param(16, "sequences per generation batch")
    sampling: SamplingSection = param(SamplingSection(), "how completions are sampled")
    loss: LossSection = param(LossSection(), "validation loss and bits-per-byte")
    builtin: BuiltinSection = param(BuiltinSection(), "sizes of the built-in tasks")
    long_context: LongContextSection = param(LongContextSection(), "long-context probes")
    decontam: DecontamSection = param(DecontamSection(), "n-gram decontamination check")
    harness: HarnessSection = param(HarnessSection(), "lm-evaluation-harness bridge")
    judge: JudgeConfig = param(JudgeConfig(), "the LLM judge of 'judge' task rows (judge= model)")
    report: bool = param(True, "write report/ (table, PNG plots, HTML)")
    sample: bool = param(
        True, "sample completions for tasks and verify them (avg@n, pass@k); false: only "
        "answer_bpb, which is cheap (one forward pass per item)",
    )  # fmt: skip
    answer_bpb: bool = param(
        True, "score each task also by the bits-per-byte of its gold answer given the prompt "
        "(plain-completion math/numeric/exact rows); unlike accuracy it moves for small "
        "models (OLMo 3)",
    )  # fmt: skip

    def __post_init__(self):
        for t in self.tasks:
            check(t in BUILTINS, "tasks", f"unknown task '{t}'; built-ins: {', '.join(BUILTINS)}")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(DEVICE.fullmatch(self.device) is not None, "device",
              f"'{self.device}' is not auto, cpu, cuda, cuda:N, mps or xpu[:N]")  # fmt: skip
        check(self.sample or self.answer_bpb, "sample", "sample and answer_bpb are both off")


def build_plan(
    cfg: Config,
    *,
    tokens: Path | None = None,
    texts: Sequence[Path] = (),
    tasks: Sequence[Path] = (),
    harness: Path | None = None,
    judge: Path | None = None,
) -> suite.Plan:
    """Turn a config and input paths (the eval stage's tokens=, text=, task=, harness= and
    judge= roles) into a Plan; task files are checked here."""
    b = cfg.builtin
    task_sets = [tasklib.load_task_file(p) for p in tasks]
    for name in cfg.tasks:
        if name in tasklib.BUILTINS:
            n = {"arithmetic": b.arithmetic_n, "format": b.format_n, "humaneval": b.humaneval_n,
                 "ifeval": b.ifeval_n}  # fmt: skip
            task_sets.append(tasklib.builtin(name, n[name], b.difficulty, b.seed))
    names = [t.name for t in task_sets]
    if len(set(names)) != len(names):
        raise BadInput(f"two task sets share a name: {names}; rename one (YAML 'name:')")
    judged = [t.name for t in task_sets if any(r["verifier"] == "judge" for r in t.rows)]
    if judged and judge is None:
        raise BadInput(f"task sets {judged} have 'judge' rows: give the judge model as judge=PATH")
    s, lc, h = cfg.sampling, cfg.long_context, cfg.harness
    probes = longctx.ProbeConfig(
        tuple(lc.probes), tuple(lc.lengths), tuple(lc.depths), lc.trials, lc.distractors,
        b.seed, lc.beyond_context,
    )  # fmt: skip
    return suite.Plan(
        tokens_path=tokens,
        texts=read_texts(texts, cfg.loss.text_field),
        loss=losslib.LossConfig(
            cfg.loss.seq_len,
            cfg.loss.batch_size,
            cfg.loss.max_tokens,
            tuple(cfg.loss.lengths),
            cfg.loss.beyond_context,
        ),  # fmt: skip
        tasks=task_sets,
        sampling=generative.Sampling(
            s.n,
            tuple(s.k),
            s.temperature,
            s.top_p,
            s.max_new_tokens,
            s.seed,
            s.greedy,
            cfg.batch_size,
        ),
        probes=probes if "long_context" in cfg.tasks else None,
        decontam_ngram=cfg.decontam.ngram if cfg.decontam.enabled else None,
        decontam_min_overlap=cfg.decontam.min_overlap,
        harness=HarnessConfig(
            tuple(h.tasks),
            h.num_fewshot,
            h.limit,
            h.batch_size,
            h.apply_chat_template,
            h.include_defaults,
        ),
        harness_include=harness,
        backend=cfg.backend,
        batch_size=cfg.batch_size,
        device=resolve_device(cfg.device),
        sample=cfg.sample,
        answer_bpb=cfg.answer_bpb,
        trust_remote_code=cfg.model.trust_remote_code,
        verifier_options={"judge": cfg.judge.options(judge, s.seed)} if judge else {},
    )


def resolve_device(name: str) -> str:
    """`auto` is this rank's device (`llmforge.distributed.device()`); others stay as given."""
    return str(distributed.device()) if name == "auto" else name


def read_texts(paths: Sequence[Path], text_field: str) -> dict[str, list[str]]:
    """Documents per domain from raw text inputs (`domain` field, else the file stem)."""
    texts: dict[str, list[str]] = {}
    for path in paths:
        for doc in sources.iter_documents(path, path.name.split(".")[0], text_field):
            texts.setdefault(doc.domain, []).append(doc.text)
    return texts
