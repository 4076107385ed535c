"""Evaluate one model on everything a run asks for, writing per-sample jsonl as it goes.

`Plan` gathers the work (loss data, task sets, probes, decontamination, lm-eval tasks);
`evaluate_model` loads the model once and returns its entry of results.json. The eval
stage builds a Plan from its config and inputs and calls this for each model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from llmforge import log
from llmforge.eval import answer_loss, contamination, generative, longctx
from llmforge.eval import loss as losslib
from llmforge.eval.harness import HarnessConfig, run_harness
from llmforge.eval.tasks import TaskSet, prompt_text
from llmforge.verifiers.dispatch import Correct


@dataclass
class Plan:
    """What to evaluate. Empty parts are skipped."""

    tokens_path: Path | None = None
    texts: dict[str, list[str]] = field(default_factory=dict)
    loss: losslib.LossConfig = field(default_factory=losslib.LossConfig)
    tasks: list[TaskSet] = field(default_factory=list)
    sampling: generative.Sampling = field(default_factory=generative.Sampling)
    probes: longctx.ProbeConfig | None = None
    decontam_ngram: int | None = 13
    decontam_min_overlap: float = 0.0
    harness: HarnessConfig = field(default_factory=HarnessConfig)
    harness_include: Path | None = None
    backend: str = "transformers"
    batch_size: int = 16
    sample: bool = True  # generate and verify completions for tasks
    answer_bpb: bool = True  # bits-per-byte of each task's gold answer
    device: str = "cpu"
    trust_remote_code: bool = False
    verifier_options: dict = field(default_factory=dict)  # per verifier, e.g. the judge's


def load(path: Path, device: str = "cpu", trust_remote_code: bool = False):
    """(model, tokenizer) of a model artifact or any causal-LM directory, in eval mode."""
    from llmforge import causal_lm

    model, tokenizer = causal_lm.load(path, trust_remote_code)
    return model.to(device).eval(), tokenizer


def make_generator(path: Path, plan: Plan, model=None, tokenizer=None):
    """The generation backend: transformers (sharing the loaded model) or vLLM."""
    if plan.backend == "vllm":
        from llmforge.gen import VLLMGenerator

        return VLLMGenerator(path)
    from llmforge.gen import TransformersGenerator

    return TransformersGenerator(model, tokenizer, batch_size=plan.batch_size)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def evaluate_model(path: Path, manifest: dict, plan: Plan, samples_dir: Path) -> dict:
    """results.json entry of one model; per-sample rows go to `samples_dir`."""
    entry: dict = {
        "path": str(path),
        "id": manifest.get("id"),
        "stage": manifest.get("stage") or "",
    }
    model, tokenizer = load(path, plan.device, plan.trust_remote_code)
    if plan.tokens_path is not None or plan.texts:
        entry["loss"] = _loss(model, tokenizer, plan)
    if plan.tasks:
        report = _decontaminate(path, plan) if plan.sample else None
        if report is not None:
            entry["contamination"] = report.to_json()
        entry["tasks"] = _tasks(path, plan, model, tokenizer, samples_dir, report)
    if plan.probes is not None:
        records, summary = longctx.run_probes(model, tokenizer, plan.probes)
        entry["long_context"] = summary
        write_jsonl(samples_dir / "long_context.jsonl", records)
    if plan.harness.tasks:
        results, per_task = run_harness(path, plan.harness, plan.harness_include, plan.device)
        entry["harness"] = results
        for task, rows in per_task.items():
            write_jsonl(samples_dir / f"harness_{task}.jsonl", rows)
    return entry


def _tasks(path: Path, plan: Plan, model, tokenizer, samples_dir: Path,
           report: contamination.Report | None) -> dict:  # fmt: skip
    """Per task: sampled scores (avg@n, pass@k) and the gold answer's bits-per-byte."""
    generator = make_generator(path, plan, model, tokenizer) if plan.sample else None
    correct = Correct(options=plan.verifier_options)
    out: dict = {}
    for task in plan.tasks:
        metrics: dict = {}
        if generator is not None:
            result = generative.run_task(generator, task, plan.sampling, correct)
            flagged = report.ids(task.name) if report else set()
            metrics = generative.task_metrics(result, plan.sampling.ks, flagged)
            write_jsonl(samples_dir / f"{task.name}.jsonl", result.records)
        if plan.answer_bpb:
            metrics.update(answer_loss.task_answer_bpb(model, tokenizer, task.rows,
                                                       plan.batch_size))  # fmt: skip
        out[task.name] = metrics
    return out


def _loss(model, tokenizer, plan: Plan) -> dict:
    docs = _domain_docs(tokenizer, plan)  # read and tokenized once, for every window length
    per_domain = losslib.by_domain(model, tokenizer, docs, plan.loss)
    out = {
        "per_domain": per_domain,
        "overall": losslib.overall(per_domain),
        "seq_len": plan.loss.seq_len,
    }
    lengths = _loss_lengths(model, plan.loss)
    if lengths:
        out["by_length"] = {
            str(n): losslib.overall(
                losslib.by_domain(model, tokenizer, docs, replace(plan.loss, seq_len=n))
            )
            for n in lengths
        }
    return out


def _domain_docs(tokenizer, plan: Plan) -> dict:
    docs = {}
    if plan.tokens_path is not None:
        from llmforge.data.tokens import TokenStore

        store = TokenStore(plan.tokens_path, "val")
        docs.update(losslib.tokens_docs(tokenizer, store, plan.loss.max_tokens))
    if plan.texts:
        docs.update(losslib.text_docs(tokenizer, plan.texts, plan.loss.max_tokens))
    return docs


def _loss_lengths(model, cfg: losslib.LossConfig) -> list[int]:
    """The extra window lengths to measure; past the declared context only when asked."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if cfg.beyond_context or limit is None:
        return list(cfg.lengths)
    skipped = [n for n in cfg.lengths if n > limit]
    if skipped:
        log.warn(f"loss skips window lengths {skipped}: the model's context is {limit}")
    return [n for n in cfg.lengths if n <= limit]


def _decontaminate(path: Path, plan: Plan) -> contamination.Report | None:
    if plan.decontam_ngram is None:
        return None
    sources = contamination.training_sources(path)
    items = {t.name: {r["id"]: prompt_text(r) for r in t.rows} for t in plan.tasks}
    report = contamination.check(items, sources, plan.decontam_ngram, plan.decontam_min_overlap)
    flagged = sum(len(v) for v in report.contaminated.values())
    log.info(
        f"decontamination: {report.documents} training documents from {len(sources)} "
        f"source(s); {flagged} eval item(s) overlap at {plan.decontam_ngram}-grams"
    )
    return report
