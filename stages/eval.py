"""The eval stage: model artifacts in, one `eval` artifact out (results, samples, report).

    llmforge eval MODEL tokens=TOKENS task=math.jsonl -s tasks=[arithmetic,long_context]
    llmforge eval compare=PRETRAIN compare=SFT_EVAL compare=RLVR_EVAL   # report only

Loss and bits-per-byte run when a `tokens=` (its val split) or `text=` input is given;
generative tasks come from `task=` files (jsonl or YAML) and the built-ins named in
`tasks`; lm-eval runs when `harness.tasks` is set (local task YAML via `harness=DIR`).
Every generative task is checked for contamination against the training data in each
model's lineage. The report compares this run's models with any `compare=` artifacts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llmforge import log
from llmforge.config import check, param
from llmforge.data import sources
from llmforge.errors import BadInput
from llmforge.eval import generative, longctx, pipeline, report, suite
from llmforge.eval import loss as losslib
from llmforge.eval import tasks as tasklib
from llmforge.eval.harness import HarnessConfig
from llmforge.stage import Inputs, Role, Stage

BUILTINS = (*tasklib.BUILTINS, "long_context")


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

    def __post_init__(self):
        check(self.seq_len >= 2, "seq_len", "must be >= 2")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.max_tokens >= 2, "max_tokens", "must be >= 2")


@dataclass(frozen=True)
class BuiltinSection:
    arithmetic_n: int = param(50, "held-out arithmetic and word problems")
    difficulty: int = param(2, "arithmetic difficulty 1-3")
    format_n: int = param(20, "think/no_think format-compliance items")
    humaneval_n: int = param(20, "HumanEval problems (0 = all 164)")
    seed: int = param(0, "seed of the generated problems")

    def __post_init__(self):
        check(self.difficulty in (1, 2, 3), "difficulty", "must be 1, 2 or 3")
        check(self.arithmetic_n >= 1 and self.format_n >= 1, "arithmetic_n", "must be >= 1")
        check(self.humaneval_n >= 0, "humaneval_n", "must be >= 0")


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
    tasks: list[str] = param([], f"built-in tasks: {', '.join(BUILTINS)}")
    backend: Literal["transformers", "vllm"] = param("transformers", "generation backend")
    device: str = param("cpu", "torch device for the transformers backend, loss and probes")
    batch_size: int = param(16, "sequences per generation batch")
    sampling: SamplingSection = param(SamplingSection(), "how completions are sampled")
    loss: LossSection = param(LossSection(), "validation loss and bits-per-byte")
    builtin: BuiltinSection = param(BuiltinSection(), "sizes of the built-in tasks")
    long_context: LongContextSection = param(LongContextSection(), "long-context probes")
    decontam: DecontamSection = param(DecontamSection(), "n-gram decontamination check")
    harness: HarnessSection = param(HarnessSection(), "lm-evaluation-harness bridge")
    report: bool = param(True, "write report/ (table, PNG plots, HTML)")

    def __post_init__(self):
        for t in self.tasks:
            check(t in BUILTINS, "tasks", f"unknown task '{t}'; built-ins: {', '.join(BUILTINS)}")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")


def build_plan(cfg: Config, inputs: Inputs) -> suite.Plan:
    """Turn config and inputs into the library's Plan; task files are checked here."""
    b = cfg.builtin
    task_sets = [tasklib.load_task_file(r.path) for r in inputs.all("task")]
    for name in cfg.tasks:
        if name in tasklib.BUILTINS:
            n = {"arithmetic": b.arithmetic_n, "format": b.format_n, "humaneval": b.humaneval_n}[
                name
            ]
            task_sets.append(tasklib.builtin(name, n, b.difficulty, b.seed))
    names = [t.name for t in task_sets]
    if len(set(names)) != len(names):
        raise BadInput(f"two task sets share a name: {names}; rename one (YAML 'name:')")
    s, lc, h = cfg.sampling, cfg.long_context, cfg.harness
    tokens = inputs.get("tokens")
    harness_dir = inputs.get("harness")
    return suite.Plan(
        tokens_path=tokens.path if tokens else None,
        texts=_texts(inputs, cfg.loss.text_field),
        loss=losslib.LossConfig(cfg.loss.seq_len, cfg.loss.batch_size, cfg.loss.max_tokens),
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
        probes=longctx.ProbeConfig(
            tuple(lc.probes),
            tuple(lc.lengths),
            tuple(lc.depths),
            lc.trials,
            lc.distractors,
            b.seed,
            lc.beyond_context,
        )
        if "long_context" in cfg.tasks
        else None,
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
        harness_include=harness_dir.path if harness_dir else None,
        backend=cfg.backend,
        batch_size=cfg.batch_size,
        device=cfg.device,
    )


def _texts(inputs: Inputs, text_field: str) -> dict[str, list[str]]:
    texts: dict[str, list[str]] = {}
    for ref in inputs.all("text"):
        for doc in sources.iter_documents(ref.path, ref.path.name.split(".")[0], text_field):
            texts.setdefault(doc.domain, []).append(doc.text)
    return texts


def _labels(refs) -> list[str]:
    labels: list[str] = []
    for ref in refs:
        label = report.label_for(ref.path, ref.manifest or {})
        labels.append(label if label not in labels else f"{label}-{ref.id[:8]}")
    return labels


def run(cfg: Config, inputs: Inputs, out) -> dict:
    models = inputs.all("model")
    if not models and not inputs.all("compare"):
        raise BadInput("eval needs a model input (MODEL) or compare=PATH inputs to report on")
    plan = build_plan(cfg, inputs)
    if models and not (
        plan.tokens_path or plan.texts or plan.tasks or plan.probes or plan.harness.tasks
    ):
        raise BadInput(
            "nothing to evaluate: give tokens=/text=/task= inputs, or set tasks "
            f"({', '.join(BUILTINS)}) or harness.tasks"
        )
    if plan.harness.tasks and inputs.get("harness") is None:
        log.warn("harness.tasks without harness=DIR: lm-eval will need to reach the hub")
    results: dict = {"models": {}, "config": {"sampling": vars(plan.sampling)}}
    for label, ref in zip(_labels(models), models):
        log.info(f"evaluating {label}")
        results["models"][label] = suite.evaluate_model(
            ref.path, ref.manifest or {}, plan, out.dir / "samples" / label
        )
    (out.dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    metrics = _metrics(results)
    if cfg.report:
        rows = report.merge(_report_rows(inputs, out.dir / "results.json"))
        found = pipeline.verdicts(rows)
        sections = (
            [
                (
                    "pipeline: did each stage move its number?",
                    pipeline.HEADER,
                    [v.cells() for v in found],
                )
            ]
            if found
            else []
        )
        built = report.build(rows, out.dir / "report", sections=sections)
        if found:
            _print_table(pipeline.HEADER, [v.cells() for v in found], "pipeline")
            metrics["pipeline"] = {f"{v.stage}: {v.measure}": v.cells()[2:5] for v in found}
        _print_table(built["header"], built["cells"])
        metrics["report_plots"] = built["plots"]
    return metrics


def _report_rows(inputs: Inputs, results_path: Path) -> list[report.Row]:
    """Rows in command-line order: this run's models and every compare= artifact."""
    own = {r.path: r for r in report.rows_from_eval(results_path.parent)}
    rows = []
    for ref in inputs.refs:
        if ref.role == "model":
            rows.extend(r for r in own.values() if Path(r.path) == ref.path)
        elif ref.role == "compare" and ref.kind == "eval":
            rows.extend(report.rows_from_eval(ref.path))
        elif ref.role == "compare":
            rows.append(report.rows_from_model(ref.path, ref.manifest or {}))
    return rows


def _metrics(results: dict) -> dict:
    """Headline figures per model for the manifest."""
    out: dict = {"models": len(results["models"])}
    for label, entry in results["models"].items():
        overall = entry.get("loss", {}).get("overall", {})
        if overall.get("loss") is not None:
            out[f"{label}/val_loss"] = round(overall["loss"], 5)
            out[f"{label}/bpb"] = round(overall["bpb"], 5) if overall.get("bpb") else None
        for task, metrics in entry.get("tasks", {}).items():
            head = generative.headline(metrics)
            if head:
                out[f"{label}/{task}/{head[0]}"] = round(head[1], 5)
        out[f"{label}/contaminated"] = sum(
            len(v) for v in entry.get("contamination", {}).get("contaminated", {}).values()
        )
    return out


def _print_table(header: list[str], cells: list[list[str]], title: str = "eval") -> None:
    from rich.table import Table

    table = Table(*header, title=title)
    for row in cells:
        table.add_row(*row)
    log.console.print(table) if not log.is_quiet() else None


STAGE = Stage(
    name="eval",
    kind="eval",
    config=Config,
    run=run,
    roles={
        "model": Role(kinds=("model",), min=0, max=None, help="models to evaluate"),
        "tokens": Role(
            kinds=("tokens",),
            min=0,
            max=1,
            help="loss and bits-per-byte per domain on its val split",
        ),
        "text": Role(
            kinds=("raw",),
            min=0,
            max=None,
            help="raw documents (jsonl, parquet, text folder) for loss per domain",
        ),
        "task": Role(kinds=("raw",), min=0, max=None, help="task files: jsonl or YAML"),
        "harness": Role(kinds=("raw",), min=0, max=1, help="folder of local lm-eval task YAML"),
        "compare": Role(
            kinds=("eval", "model"),
            min=0,
            max=None,
            help="eval or model artifacts to put in the comparison report",
        ),
    },
    default_role="model",
    help="Evaluate models: loss/bpb, verifiable tasks with pass@k, long-context probes, "
    "decontamination, lm-eval; writes results, per-sample outputs and a report.",
    flags={"greedy": "sampling.greedy"},
)
