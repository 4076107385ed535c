"""Regression from mixture (token shares) to target: LightGBM, as in RegMix, and a linear
model, each judged by k-fold cross-validation (Spearman rho and MAE on held-out proxies).

The linear model is linear in [shares, log(shares + eps)]: plain linear in the shares
always puts its optimum on a corner of the simplex, while loss falls roughly with the log
of a domain's share (diminishing returns), which gives interior optima.

The solver only needs the model to *rank* mixtures, so rho is the figure that picks the
model under `fit.model: auto`; MAE breaks ties and tells how far off absolute values are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr
from sklearn.base import RegressorMixin
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from llmforge.regmix.config import FitConfig

MODELS = ("lightgbm", "linear")
LOG_EPS = 1e-3


def share_features(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.log(x + LOG_EPS)], axis=1)


@dataclass
class Fit:
    """The model chosen for solving, and the cross-validated quality of every candidate."""

    name: str
    model: RegressorMixin
    quality: dict[str, dict[str, float]]  # model -> {"spearman", "mae"}
    cv_predictions: dict[str, np.ndarray]  # model -> held-out prediction per proxy

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(np.asarray(x, dtype=np.float64))


def make_model(name: str, cfg: FitConfig) -> RegressorMixin:
    if name == "linear":
        return make_pipeline(FunctionTransformer(share_features), Ridge(alpha=cfg.ridge_alpha))
    from lightgbm import LGBMRegressor

    return LGBMRegressor(
        n_estimators=cfg.lgbm_estimators, learning_rate=cfg.lgbm_learning_rate,
        num_leaves=cfg.lgbm_leaves, min_child_samples=cfg.lgbm_min_child,
        min_child_weight=0.0, subsample_freq=0, random_state=cfg.seed, verbose=-1, n_jobs=1,
    )  # fmt: skip


def quality(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    rho = spearmanr(y, pred).statistic
    return {
        "spearman": float(rho) if np.isfinite(rho) else 0.0,
        "mae": float(np.mean(np.abs(y - pred))),
    }


def fit(x: np.ndarray, y: np.ndarray, cfg: FitConfig) -> Fit:
    """Cross-validate both models, pick one (cfg.model or the best rho), refit it on all."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    folds = KFold(n_splits=min(cfg.folds, len(y)), shuffle=True, random_state=cfg.seed)
    preds = {m: cross_val_predict(make_model(m, cfg), x, y, cv=folds) for m in MODELS}
    scores = {m: quality(y, p) for m, p in preds.items()}
    name = cfg.model
    if name == "auto":
        name = max(MODELS, key=lambda m: (scores[m]["spearman"], -scores[m]["mae"]))
    model = make_model(name, cfg).fit(x, y)
    return Fit(name, model, scores, preds)
