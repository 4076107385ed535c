"""The regmix report figure: cross-validated predicted vs actual target of the proxies, and
the weight of each domain in the chosen, natural and uniform mixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def report_png(path: Path, y: np.ndarray, cv_predictions: dict[str, np.ndarray],
               quality: dict[str, dict], chosen_model: str, domains: list[str],
               mixtures: dict[str, np.ndarray]) -> Path:  # fmt: skip
    """Write a two-panel PNG: calibration of each regressor, and domain weights by mixture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    _calibration(left, y, cv_predictions, quality, chosen_model)
    _weights(right, domains, mixtures)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _calibration(ax, y, cv_predictions, quality, chosen_model) -> None:
    for (name, pred), marker in zip(sorted(cv_predictions.items()), ("o", "s", "^")):
        q = quality[name]
        tag = " (chosen)" if name == chosen_model else ""
        ax.scatter(y, pred, marker=marker, alpha=0.75,
                   label=f"{name}{tag}: rho={q['spearman']:.2f}, MAE={q['mae']:.3f}")  # fmt: skip
    lo = min(y.min(), *(p.min() for p in cv_predictions.values()))
    hi = max(y.max(), *(p.max() for p in cv_predictions.values()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set_xlabel("actual target (proxy val loss)")
    ax.set_ylabel("cross-validated prediction")
    ax.set_title(f"{len(y)} proxies: predicted vs actual")
    ax.legend(fontsize=8)


def _weights(ax, domains, mixtures) -> None:
    width = 0.8 / len(mixtures)
    xs = np.arange(len(domains))
    for i, (name, w) in enumerate(mixtures.items()):
        bars = ax.bar(xs + (i - (len(mixtures) - 1) / 2) * width, w, width, label=name)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(xs, domains)
    ax.set_ylabel("token share")
    ax.set_title("domain weights")
    ax.legend(fontsize=8)
