"""The pipeline verdict: one line per stage saying whether it moved the number it exists to
move, measured on held-out data.

It walks the lineage of the evaluated models to find each stage's artifact, reads that
artifact's metrics and the eval results of the models before and after it, and says
plainly whether the number improved. Nothing here is tuned: a stage that did not help at
this scale is reported as such.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmforge import artifact
from llmforge.eval.report import Row


@dataclass
class Verdict:
    stage: str
    measure: str
    before: str
    after: str
    improved: bool | None  # None: nothing to compare
    note: str = ""
    noise: bool = False  # the change is within two standard errors of sampling noise

    def cells(self) -> list[str]:
        mark = {True: "yes", False: "NO", None: "n/a"}[self.improved]
        if self.noise and self.improved is not None:
            mark += " (within noise)"
        return [self.stage, self.measure, self.before, self.after, mark, self.note]


HEADER = ["stage", "measured on held-out data", "before", "after", "improved", "note"]


# ---------------------------------------------------------------- lineage


def stage_artifacts(rows: list[Row]) -> dict[str, list[tuple[Path, dict]]]:
    """Every artifact in the lineage of the rows' models, by stage, deepest first."""
    found: dict[str, list[tuple[Path, dict]]] = {}
    seen: set[str] = set()

    def visit(node: dict) -> None:
        for child in node.get("inputs", []):
            visit(child)
        if node.get("kind") in ("raw", "missing") or node.get("outside") or node["id"] in seen:
            return
        seen.add(node["id"])
        path = Path(node["path"])
        found.setdefault(node["stage"], []).append((path, artifact.read_manifest(path)))

    for row in rows:
        if row.path and (Path(row.path) / artifact.MANIFEST).is_file():
            visit(artifact.lineage(row.path))
    return found


def _row_of(rows: list[Row], stage: str) -> Row | None:
    return next((r for r in rows if r.stage == stage), None)


# ---------------------------------------------------------------- stage checks


def dedup_verdict(arts: dict) -> list[Verdict]:
    out = []
    for path, manifest in arts.get("dedup", []):
        removed = _removed_ids(path)
        planted = _planted(path, manifest)
        m = manifest.get("metrics", {})
        if not planted:
            out.append(
                Verdict(
                    "dedup",
                    "documents removed",
                    str(m.get("docs_in")),
                    str(m.get("docs_kept")),
                    None,
                    "no planted.json to score",
                )
            )
            continue
        hits = [p for p in planted if p & removed]
        other = removed - set().union(*planted)
        note = f"{len(other)} other documents removed (Gopher/MinHash on real text)"
        out.append(
            Verdict(
                "dedup",
                "planted duplicates removed (recall)",
                f"{len(planted)} planted",
                f"{len(hits)} removed",
                len(hits) == len(planted),
                note,
            )
        )
    return out


def _removed_ids(corpus: Path) -> set[str]:
    ids = set()
    for f in sorted((corpus / "removed").glob("*.jsonl")):
        ids.update(json.loads(line)["id"] for line in f.read_text().splitlines() if line)
    return ids


def _planted(corpus: Path, manifest: dict) -> list[set[str]]:
    """Planted records as id sets (a copy and its original: removing either is a hit)."""
    for node in _raw_leaves(artifact.lineage(corpus)):
        for folder in (Path(node).parent, Path(node).parent.parent):
            if (folder / "planted.json").is_file():
                data = json.loads((folder / "planted.json").read_text())
                return [
                    {rec["id"], rec["of"]} if "of" in rec else {rec["id"]}
                    for records in data.values()
                    for rec in records
                ]
    return []


def _raw_leaves(node: dict) -> list[str]:
    if node.get("kind") == "raw":
        return [node["path"]]
    return [leaf for child in node.get("inputs", []) for leaf in _raw_leaves(child)]


def regmix_verdict(arts: dict) -> list[Verdict]:
    out = []
    for _, manifest in arts.get("regmix", []):
        m = manifest.get("metrics", {})
        confirm = m.get("confirm") or {}
        note = (
            f"weights {_fmt_weights(m.get('weights') or {})}; {m.get('model')} fit, "
            f"CV Spearman {_num(m.get('spearman'))} over {m.get('n_proxies')} proxies"
        )
        target = m.get("target") or "val loss"  # "val loss", "eval metrics" or both
        if confirm:
            measure = f"{target} of a confirmation proxy: natural -> chosen mix"
            got, improved = confirm, bool(confirm.get("chosen_beats_natural"))
        else:
            measure = f"predicted {target}: natural -> chosen mix (no confirm run)"
            got, improved = m.get("predicted_target") or {}, None
        out.append(Verdict("regmix", measure, _num(got.get("natural")), _num(got.get("chosen")),
                           improved, note))  # fmt: skip
    return out


def pretrain_verdict(rows: list[Row]) -> list[Verdict]:
    row = _row_of(rows, "pretrain")
    if row is None or len(row.val_curve) < 2:
        return []
    first, last = row.val_curve[0][1], row.val_curve[-1][1]
    return [
        Verdict(
            "pretrain",
            "validation loss (first -> last eval)",
            _num(first),
            _num(last),
            last < first,
            f"{len(row.val_curve)} validation points",
        )
    ]


def compare(
    rows: list[Row],
    before: str,
    after: str,
    measure: str,
    value: Callable[[Row], float | None],
    higher_is_better: bool,
    note: str = "",
    slack: float = 0.0,
    samples: Callable[[Row], int | None] | None = None,
) -> list[Verdict]:
    """One verdict row; with `slack`, a number that must be kept (not raised) may fall by it.
    With `samples` (the number of 0/1 outcomes behind a rate), a change smaller than two
    binomial standard errors is marked as within noise."""
    a, b = _row_of(rows, before), _row_of(rows, after)
    if a is None or b is None:
        return []
    va, vb = value(a), value(b)
    if va is None or vb is None:
        improved = None
    elif slack:
        improved = vb >= va - slack if higher_is_better else vb <= va + slack
    else:
        improved = vb > va if higher_is_better else vb < va
    noise = samples is not None and _within_noise(va, vb, samples(a), samples(b))
    return [Verdict(after, f"{measure} ({before} -> {after})", _num(va), _num(vb), improved, note,
                    noise)]  # fmt: skip


def _within_noise(pa: float | None, pb: float | None, na: int | None, nb: int | None) -> bool:
    """|pb - pa| < 2 standard errors of two binomial rates (samples within a problem are
    correlated, so this understates the noise: a "yes" outside it is still no proof)."""
    if None in (pa, pb) or not na or not nb:
        return False
    se = math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
    return abs(pb - pa) < 2 * se


def domain_loss(domain: str) -> Callable[[Row], float | None]:
    return lambda row: (row.loss.get("per_domain", {}).get(domain) or {}).get("loss")


def task_samples(task: str, per_problem: bool = False) -> Callable[[Row], int | None]:
    """How many 0/1 outcomes a rate rests on: samples for avg@n, problems for pass@k."""

    def count(row: Row) -> int | None:
        scores = row.tasks.get(task, {}).get("all", {})
        n, k = scores.get("problems"), scores.get("samples_per_problem")
        return (n if per_problem else n * k) if n and k else None

    return count


def task_score(task: str, key: str = "avg") -> Callable[[Row], float | None]:
    """avg@n, or with key "pass@" the pass@k of the largest k reported."""

    def value(row: Row) -> float | None:
        scores = row.tasks.get(task, {}).get("all", {})
        found = {k: v for k, v in scores.items() if k.startswith(key)}
        if not found:
            return None
        return found[max(found, key=lambda k: int(k.split("@")[1]))]

    return value


def probe_logprob(probe: str, length: int) -> Callable[[Row], float | None]:
    return lambda row: (row.long_context.get(probe, {}).get(str(length)) or {}).get("logprob")


def loss_at_length(length: int) -> Callable[[Row], float | None]:
    return lambda row: (row.loss.get("by_length", {}).get(str(length)) or {}).get("loss")


def dpo_verdict(arts: dict) -> list[Verdict]:
    out = []
    for _, manifest in arts.get("dpo", []):
        m = manifest.get("metrics", {})
        b, a = m.get("heldout_before") or {}, m.get("heldout_after") or {}
        if "accuracy" in b and "accuracy" in a:
            noise = _within_noise(b["accuracy"], a["accuracy"], b.get("pairs"), a.get("pairs"))
            out.append(
                Verdict(
                    "dpo",
                    "held-out preference accuracy",
                    _num(b["accuracy"]),
                    _num(a["accuracy"]),
                    a["accuracy"] > b["accuracy"],
                    f"{a.get('pairs', '?')} pairs; margin {_num(b.get('margin'))} -> "
                    f"{_num(a.get('margin'))}",
                    noise,
                )
            )
    return out


def verdicts(rows: list[Row], probe_length: int | None = None) -> list[Verdict]:
    """The verdict table for the evaluated models (rows) and their lineage."""
    arts = stage_artifacts(rows)
    out = dedup_verdict(arts) + regmix_verdict(arts) + pretrain_verdict(rows)
    out += compare(rows, "pretrain", "midtrain", "math-domain val loss", domain_loss("math"), False)
    length = probe_length or _longest_common(
        rows, "midtrain", "context-extend", lambda r: r.long_context.get("passkey", {})
    )
    if length:
        out += compare(
            rows,
            "midtrain",
            "context-extend",
            f"passkey log-likelihood at {length} tokens",
            probe_logprob("passkey", length),
            True,
            "accuracy "
            + _probe_acc(rows, "midtrain", length)
            + " -> "
            + _probe_acc(rows, "context-extend", length),
        )
    window = _longest_common(
        rows, "midtrain", "context-extend", lambda r: r.loss.get("by_length", {})
    )
    if window:
        out += compare(rows, "midtrain", "context-extend", f"val loss on {window}-token windows",
                       loss_at_length(window), False)  # fmt: skip
    math_rate = dict(value=task_score("math"), higher_is_better=True, samples=task_samples("math"))
    out += compare(rows, "context-extend", "sft", "think/no_think format compliance",
                   task_score("format"), True, samples=task_samples("format"))  # fmt: skip
    out += compare(rows, "context-extend", "sft", "math accuracy, avg@n sampled", **math_rate)
    out += dpo_verdict(arts)
    out += compare(rows, "sft", "dpo", "math accuracy, avg@n sampled", **math_rate)
    rl_input = "dpo" if _row_of(rows, "dpo") else "sft"  # RL starts from the DPO model if any
    out += compare(rows, rl_input, "rlvr", "math accuracy, avg@n sampled", **math_rate,
                   note=_spread_note(rows, "math", rl_input, "rlvr"))  # fmt: skip
    out += compare(rows, rl_input, "rlvr", "math pass@k (largest k)", task_score("math", "pass@"),
                   True, samples=task_samples("math", per_problem=True))  # fmt: skip
    out += compare(
        rows, rl_input, "rlvr", "think/no_think format compliance kept", task_score("format"), True,
        "kept = within 0.05; RL in one mode only can cost the other", slack=0.05,
    )  # fmt: skip
    return out


def _spread_note(rows: list[Row], task: str, *stages: str) -> str:
    """'top answer 0 in 29% of samples (sft: 11 in 4%)': shows a policy that found one guess."""
    cells = []
    for stage in stages:
        row = _row_of(rows, stage)
        m = row.tasks.get(task, {}) if row else {}
        if m.get("top_answer") is not None:
            cells.append((stage, f"{m['top_answer']} in {m['top_answer_share']:.0%}"))
    if not cells:
        return ""
    (_, last), earlier = cells[-1], cells[:-1]
    before = "".join(f" ({s}: {c})" for s, c in earlier)
    return f"most common answer {last} of samples{before}"


def _longest_common(rows: list[Row], a: str, b: str, by_length: Callable[[Row], dict]):
    """The longest length both stages' rows measured (keys of `by_length(row)`), or None."""
    ra, rb = _row_of(rows, a), _row_of(rows, b)
    if ra is None or rb is None:
        return None
    return max((int(x) for x in set(by_length(ra)) & set(by_length(rb))), default=None)


def _probe_acc(rows: list[Row], stage: str, length: int) -> str:
    row = _row_of(rows, stage)
    cell = (row.long_context.get("passkey", {}).get(str(length)) or {}) if row else {}
    return _num(cell.get("accuracy"))


def _fmt_weights(weights: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in weights.items()) if weights else "?"


def _num(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(found: list[Verdict]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(v.cells()) + " |" for v in found]
    return "\n".join(lines) + "\n"
