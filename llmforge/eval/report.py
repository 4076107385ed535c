"""The comparison report: one table and PNG plots across model and eval artifacts, and a
self-contained HTML page (PNGs embedded as base64) that shows whether the pipeline worked.

Inputs are rows, one per evaluated model, built by `rows_from_eval` (an eval artifact's
results.json) and `rows_from_model` (a model artifact's manifest and metrics.jsonl). The
plots: training loss curves, task scores and bits-per-byte per model (in the order given,
which is the order of the pipeline's stages), long-context accuracy, log-likelihood and
rank against length, and an RL model's reward, accuracy and response length per step.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from llmforge.eval.generative import headline


@dataclass
class Row:
    """Everything the report shows about one model."""

    label: str
    stage: str = ""
    path: str = ""
    curve: list[tuple[float, float]] = field(default_factory=list)
    val_curve: list[tuple[float, float]] = field(default_factory=list)
    loss: dict = field(default_factory=dict)
    tasks: dict = field(default_factory=dict)
    long_context: dict = field(default_factory=dict)
    harness: dict = field(default_factory=dict)
    contaminated: int = 0
    rl_steps: list[dict] = field(default_factory=list)  # an RL run's per-step metrics


# ---------------------------------------------------------------- collecting


def read_curves(metrics_file: Path) -> tuple[list, list]:
    """(step, loss) and (step, val_loss) points from a training run's metrics.jsonl."""
    train, val = [], []
    if not metrics_file.is_file():
        return train, val
    for i, line in enumerate(metrics_file.read_text(encoding="utf-8").splitlines()):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        x = rec.get("step", rec.get("tokens", i))
        for key, points in (("loss", train), ("train_loss", train), ("val_loss", val)):
            if isinstance(rec.get(key), (int, float)):
                points.append((float(x), float(rec[key])))
    return train, val


# What an RL run logs per step that the report plots (see llmforge.post.rl_loop).
RL_KEYS = ("reward_mean", "reward/correct", "completion_len")


def read_rl_steps(metrics_file: Path) -> list[dict]:
    """The steps of an RL run's metrics.jsonl that trained (step plus RL_KEYS); [] if none."""
    steps = []
    if not metrics_file.is_file():
        return steps
    for line in metrics_file.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "step" in rec and "reward_mean" in rec:
            steps.append({"step": rec["step"], **{k: rec[k] for k in RL_KEYS if k in rec}})
    return steps


def rows_from_model(path: Path, manifest: dict) -> Row:
    """A row for a model artifact: its stage, loss curves and RL steps."""
    train, val = read_curves(path / "metrics.jsonl")
    return Row(
        label=label_for(path, manifest),
        stage=manifest.get("stage", ""),
        path=str(path),
        curve=train,
        val_curve=val,
        rl_steps=read_rl_steps(path / "metrics.jsonl"),
    )


def rows_from_eval(path: Path) -> list[Row]:
    """One row per model an eval artifact evaluated."""
    results = json.loads((path / "results.json").read_text(encoding="utf-8"))
    rows = []
    for label, entry in results.get("models", {}).items():
        row = Row(
            label=label,
            stage=entry.get("stage", ""),
            path=entry.get("path", ""),
            loss=entry.get("loss", {}),
            tasks=entry.get("tasks", {}),
            long_context=entry.get("long_context", {}),
            harness=entry.get("harness", {}),
        )
        row.contaminated = sum(
            len(v) for v in entry.get("contamination", {}).get("contaminated", {}).values()
        )
        model_path = Path(row.path)
        if model_path.is_dir():
            row.curve, row.val_curve = read_curves(model_path / "metrics.jsonl")
            row.rl_steps = read_rl_steps(model_path / "metrics.jsonl")
        rows.append(row)
    return rows


def label_for(path: Path, manifest: dict) -> str:
    """A short, file-name-safe label: the artifact's directory name and stage."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(path).name)
    stage = manifest.get("stage", "")
    return name if not stage or stage in name else f"{name}-{stage}"


def merge(rows: list[Row]) -> list[Row]:
    """Join rows with the same model path (a model artifact and its eval), keeping order."""
    merged: dict[str, Row] = {}
    for row in rows:
        key = row.path or row.label
        if key not in merged:
            merged[key] = row
            continue
        have = merged[key]
        for name in ("loss", "tasks", "long_context", "harness"):
            getattr(have, name).update(getattr(row, name))
        have.curve = have.curve or row.curve
        have.val_curve = have.val_curve or row.val_curve
        have.rl_steps = have.rl_steps or row.rl_steps
        have.contaminated = max(have.contaminated, row.contaminated)
    return list(merged.values())


# ---------------------------------------------------------------- the table


def table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Header and cells: stage, loss, bits-per-byte, task headlines, passkey accuracy."""
    tasks = list(dict.fromkeys(t for r in rows for t in r.tasks))
    harness = list(dict.fromkeys(t for r in rows for t in r.harness))
    probes = list(
        dict.fromkeys(
            p for r in rows for p in r.long_context if isinstance(r.long_context[p], dict)
        )
    )
    header = [
        "model",
        "stage",
        "val loss",
        "bpb",
        *tasks,
        *(f"lm-eval {t}" for t in harness),
        *(f"{p} acc / rank" for p in probes),
        "contaminated",
    ]
    cells = []
    for r in rows:
        overall = r.loss.get("overall", {})
        line = [r.label, r.stage, _num(overall.get("loss")), _num(overall.get("bpb"))]
        for t in tasks:
            line.append(_task_cell(r.tasks.get(t, {})))
        for t in harness:
            line.append(_harness_cell(r.harness.get(t, {})))
        for p in probes:
            line.append(_probe_cell(r.long_context.get(p)))
        line.append(str(r.contaminated))
        cells.append(line)
    return header, cells


def _task_cell(metrics: dict) -> str:
    """'0.250 (avg@4), answer 1.93 bpb': the sampled score and the gold answer's bpb."""
    head = headline(metrics)
    parts = [f"{head[1]:.3f} ({head[0]})"] if head else []
    if metrics.get("answer_bpb") is not None:
        parts.append(f"answer {metrics['answer_bpb']:.3f} bpb")
    return ", ".join(parts) or "-"


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _harness_cell(metrics: dict) -> str:
    for key in ("acc_norm", "acc", "exact_match"):
        if key in metrics:
            return f"{metrics[key]:.3f} ({key})"
    return "-"


def _probe_cell(by_len: dict | None) -> str:
    if not by_len:
        return "-"
    longest = max(by_len, key=int)
    at = by_len[longest]
    return f"{at['accuracy']:.2f} / {at['rank']:.2f} @{longest}"


def markdown(header: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss_curves(rows: list[Row], path: Path) -> bool:
    """Training (solid) and validation (dashed) loss against step, one line per model."""
    drawn = [r for r in rows if r.curve or r.val_curve]
    if not drawn:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in drawn:
        if r.curve:
            line = ax.plot(*zip(*r.curve), label=f"{r.label} train")[0]
            color = line.get_color()
        else:
            color = None
        if r.val_curve:
            ax.plot(*zip(*r.val_curve), "o--", color=color, label=f"{r.label} val")
    ax.set(xlabel="step", ylabel="loss (nats/token)", title="Training loss")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def plot_scores(rows: list[Row], path: Path) -> bool:
    """Grouped bars: task scores (left) and bits-per-byte per domain (right), bar per model."""
    tasks = list(dict.fromkeys(t for r in rows for t in r.tasks))
    domains = list(dict.fromkeys(d for r in rows for d in r.loss.get("per_domain", {})))
    if not tasks and not domains:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _bars(
        axes[0],
        rows,
        tasks,
        lambda r, t: (headline(r.tasks[t]) or (0, None))[1] if t in r.tasks else None,
        "score (avg@n)",
        "Task scores",
        (0, 1.05),
    )
    _bars(
        axes[1],
        rows,
        domains,
        lambda r, d: r.loss.get("per_domain", {}).get(d, {}).get("bpb"),
        "bits per byte (lower is better)",
        "Validation bits-per-byte",
    )
    _save(fig, path)
    return True


def _bars(ax, rows, groups, value, ylabel, title, ylim=None) -> None:
    width = 0.8 / max(len(rows), 1)
    for i, r in enumerate(rows):
        xs = [g + i * width for g in range(len(groups))]
        values = [value(r, g) for g in groups]
        bars = ax.bar(xs, [v if v is not None else 0.0 for v in values], width, label=r.label)
        labels = [f"{v:.2f}" if v is not None else "n/a" for v in values]
        ax.bar_label(bars, labels=labels, fontsize=7)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups, rotation=15)
    ax.set(ylabel=ylabel, title=title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if not groups:
        ax.text(0.5, 0.5, "no data", ha="center", transform=ax.transAxes)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)


def plot_context(rows: list[Row], path: Path) -> bool:
    """Accuracy, log-likelihood and rank of the secret against context length."""
    series = [
        (r, p, by_len)
        for r in rows
        for p, by_len in r.long_context.items()
        if isinstance(by_len, dict) and by_len
    ]
    if not series:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for r, probe, by_len in series:
        lengths = sorted(by_len, key=int)
        xs = [int(n) for n in lengths]
        for ax, key in zip(axes, ("accuracy", "logprob", "rank")):
            ax.plot(xs, [by_len[n][key] for n in lengths], "o-", label=f"{r.label} {probe}")
    titles = ("Retrieval accuracy", "Log-likelihood of the secret", "Rank of the secret (1 best)")
    for ax, title, ylabel in zip(axes, titles, ("accuracy", "log p (nats)", "rank")):
        ax.set(xlabel="context length (tokens)", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.05, 1.05)
    axes[2].invert_yaxis()
    axes[0].legend(fontsize=7)
    _save(fig, path)
    return True


RL_SMOOTHING = 10  # steps in the trailing mean drawn over the per-step RL points


def trailing_mean(values, window: int) -> list[float]:
    """Mean of each value and up to `window - 1` before it: one RL step's batch is noisy."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_rl_curves(rows: list[Row], path: Path) -> bool:
    """Reward, accuracy (the `correct` part of the reward) and response length per RL step."""
    runs = [r for r in rows if r.rl_steps]
    if not runs:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = (
        ("reward_mean", "mean reward", "Reward"),
        ("reward/correct", "share of correct answers", "Accuracy (verifier)"),
        ("completion_len", "tokens", "Response length"),
    )
    for ax, (key, ylabel, title) in zip(axes, panels):
        for r in runs:
            points = [(m["step"], m[key]) for m in r.rl_steps if key in m]
            if points:
                steps, values = zip(*points)
                (line,) = ax.plot(steps, values, ".", alpha=0.35, label=f"{r.label} (per step)")
                ax.plot(steps, trailing_mean(values, RL_SMOOTHING), "-", lw=2, color=line.get_color(),
                        label=f"{r.label} (mean of last {RL_SMOOTHING})")  # fmt: skip
        ax.set(xlabel="RL step", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    _save(fig, path)
    return True


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)


# ---------------------------------------------------------------- the page


def build(
    rows: list[Row],
    out_dir: Path,
    title: str = "llmforge eval report",
    sections: list[tuple[str, list[str], list[list[str]]]] = (),
) -> dict:
    """Write summary.md, the PNGs and report.html into `out_dir`; return what was written.

    `sections` are extra (title, header, cells) tables shown above the per-model table.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = merge(rows)
    header, cells = table(rows)
    summary = "".join(f"## {name}\n\n{markdown(h, c)}\n" for name, h, c in sections)
    (out_dir / "summary.md").write_text(summary + markdown(header, cells), encoding="utf-8")
    plots = {}
    for name, fn in (
        ("loss_curves", plot_loss_curves),
        ("scores", plot_scores),
        ("context", plot_context),
        ("rl_curves", plot_rl_curves),
    ):
        if fn(rows, out_dir / f"{name}.png"):
            plots[name] = out_dir / f"{name}.png"
    html_page = page(title, header, cells, plots, sections)
    (out_dir / "report.html").write_text(html_page, encoding="utf-8")
    return {"rows": len(rows), "plots": sorted(plots), "header": header, "cells": cells}


def _html_table(header: list[str], cells: list[list[str]]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in cells)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(
    title: str,
    header: list[str],
    cells: list[list[str]],
    plots: dict[str, Path],
    sections: list[tuple[str, list[str], list[list[str]]]] = (),
) -> str:
    """A self-contained HTML page: extra sections, the table, then each plot as a PNG."""
    esc = html.escape
    extra = "".join(f"<h2>{esc(name)}</h2>{_html_table(h, c)}" for name, h, c in sections)
    images = "".join(
        f'<h2>{esc(name.replace("_", " "))}</h2><img alt="{esc(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}">'
        for name, p in plots.items()
    )
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{style}</style></head><body><h1>{esc(title)}</h1>{extra}"
        f"<h2>models</h2>{_html_table(header, cells)}{images}</body></html>\n"
    )
