"""An eval artifact's suite run on every regmix proxy, so eval metrics can be the target.

The eval artifact says what to measure: its manifest holds the resolved eval config and
its inputs (tokens=, text=, task=, harness=). `suite_spec` turns those into a JSON spec a
proxy task carries; `evaluate_proxy` rebuilds the same Plan in the worker and runs it on
the freshly trained proxy. `check_metrics` makes sure each target metric exists in the
artifact's own results.json before any proxy trains.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from llmforge import artifact
from llmforge import config as configlib
from llmforge.errors import BadInput
from llmforge.regmix.target import metric_value

ROLES = ("tokens", "text", "task", "harness")


def suite_spec(eval_ref: artifact.Ref, tokenizer_dir: Path) -> dict:
    """{"config": eval config (no decontamination, no report), role: path(s)} of an eval."""
    from llmforge.eval.config import Config as EvalConfig

    manifest = eval_ref.manifest or artifact.read_manifest(eval_ref.path)
    where = f"eval artifact {eval_ref.path}"
    try:
        cfg = configlib.from_dict(EvalConfig, manifest["config"])
    except (BadInput, KeyError) as e:  # a manifest from another llmforge version
        raise BadInput(f"{where}: its config does not load as an eval config: {e}") from e
    # Proxies are not artifacts (no lineage to check) and need no report.
    cfg = replace(cfg, report=False, decontam=replace(cfg.decontam, enabled=False))
    spec: dict = {"config": configlib.to_dict(cfg), "tokens": None, "text": [], "task": [],
                  "harness": None}  # fmt: skip
    for recorded in manifest.get("inputs", []):
        role = recorded["role"]
        if role not in ROLES:
            continue
        path = _unchanged(recorded, where)
        if role in ("tokens", "harness"):
            spec[role] = str(path)
        else:
            spec[role].append(str(path))
    if spec["tokens"]:
        _same_tokenizer(Path(spec["tokens"]) / "tokenizer", tokenizer_dir, where)
    return spec


def _unchanged(recorded: dict, where: str) -> Path:
    """The input's path, after checking it still has the id the eval recorded."""
    kinds = ["raw"] if recorded["kind"] == "raw" else [recorded["kind"]]
    try:
        ref = artifact.open_input(recorded["path"], kinds)
    except BadInput as e:
        raise BadInput(f"{where}: its {recorded['role']}= input is gone or broken: {e}") from e
    if ref.id != recorded["id"]:
        raise BadInput(
            f"{where}: its {recorded['role']}= input {recorded['path']} changed since the eval "
            "was made; re-run the eval so the proxies are measured on what it measured"
        )
    return ref.path


def _same_tokenizer(theirs: Path, ours: Path, where: str) -> None:
    a, b = theirs / "tokenizer.json", ours / "tokenizer.json"
    if a.is_file() and b.is_file() and a.read_bytes() != b.read_bytes():
        raise BadInput(
            f"{where}: its tokens= input was made with another tokenizer than the regmix "
            "tokens, so proxy losses on it would be meaningless; use text= inputs instead"
        )


def check_metrics(metrics: dict[str, float], eval_path: Path) -> None:
    """Every target metric must be a number in the eval artifact's results."""
    results = json.loads((eval_path / "results.json").read_text(encoding="utf-8"))
    entries = list(results.get("models", {}).values())
    if not entries:
        raise BadInput(f"eval artifact {eval_path} evaluated no model; no metrics to target")
    for path in metrics:
        metric_value(entries[0], path, f"eval artifact {eval_path}")


def evaluate_proxy(model_dir: Path, spec: dict, samples_dir: Path) -> dict:
    """The results.json entry of one proxy model under the suite `spec` describes."""
    from llmforge.eval import suite
    from llmforge.eval.config import Config as EvalConfig
    from llmforge.eval.config import build_plan

    cfg = configlib.from_dict(EvalConfig, spec["config"])
    plan = build_plan(
        cfg,
        tokens=Path(spec["tokens"]) if spec["tokens"] else None,
        texts=[Path(p) for p in spec["text"]],
        tasks=[Path(p) for p in spec["task"]],
        harness=Path(spec["harness"]) if spec["harness"] else None,
    )
    entry = suite.evaluate_model(model_dir, {}, plan, samples_dir)
    entry.pop("path", None)
    return entry
