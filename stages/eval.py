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
from pathlib import Path

from llmforge import log, sandbox
from llmforge.errors import BadInput
from llmforge.eval import generative, pipeline, report, suite
from llmforge.eval.config import BUILTINS, Config, build_plan
from llmforge.stage import Inputs, Role, Stage


def plan_for(cfg: Config, inputs: Inputs) -> suite.Plan:
    """The Plan of this run's tokens=, text=, task=, harness= and judge= inputs."""
    tokens, harness, judge = inputs.get("tokens"), inputs.get("harness"), inputs.get("judge")
    return build_plan(
        cfg,
        tokens=tokens.path if tokens else None,
        texts=[r.path for r in inputs.all("text")],
        tasks=[r.path for r in inputs.all("task")],
        harness=harness.path if harness else None,
        judge=judge.path if judge else None,
    )


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
    plan = plan_for(cfg, inputs)
    if models and not (
        plan.tokens_path or plan.texts or plan.tasks or plan.probes or plan.harness.tasks
    ):
        raise BadInput(
            "nothing to evaluate: give tokens=/text=/task= inputs, or set tasks "
            f"({', '.join(BUILTINS)}) or harness.tasks"
        )
    if plan.harness.tasks and inputs.get("harness") is None:
        log.warn("harness.tasks without harness=DIR: lm-eval will need to reach the hub")
    wall = sandbox.isolation()  # the code verifier's wall; recorded with the results
    results: dict = {"models": {}, "config": {"sampling": vars(plan.sampling), "sandbox": wall}}
    for label, ref in zip(_labels(models), models):
        log.info(f"evaluating {label}")
        manifest = ref.manifest or {"id": ref.id}  # an outside model: its content id
        results["models"][label] = suite.evaluate_model(
            ref.path, manifest, plan, out.dir / "samples" / label
        )
    (out.dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    metrics = {**_metrics(results), "sandbox": wall}
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
        "model": Role(
            kinds=("model",),
            min=0,
            max=None,
            help="models to evaluate: artifacts or any causal-LM checkpoint dirs",
        ),
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
            help="raw documents (jsonl, parquet, save_to_disk, text folder) for loss per domain",
        ),
        "task": Role(kinds=("raw",), min=0, max=None, help="task files: jsonl or YAML"),
        "harness": Role(kinds=("raw",), min=0, max=1, help="folder of local lm-eval task YAML"),
        "judge": Role(kinds=("model",), min=0, max=1, help="judge model grading 'judge' task rows"),
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
