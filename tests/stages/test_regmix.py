"""The regmix stage end to end on the tiny three-domain tokens: artifact contents, resume
of finished proxies, and a mixture artifact driving pretrain's sampling."""

import json

import numpy as np
import pytest

from llmforge import artifact
from llmforge.data.mixture import read_mixture
from llmforge.stage import execute, plan
from stages.regmix import STAGE

pytestmark = pytest.mark.slow  # trains ~10 proxies and a tiny pretrain: ~1-2 min on 2 cores

N = 5
SETS = [
    f"proposals.n_proxies={N}",
    "proxy.steps=3",
    "proxy.batch_size=2",
    "proxy.seq_len=32",
    "proxy.val_batches=1",
    "proxy.workers=1",
    "fit.folds=2",
    "solve.samples=2000",
    "solve.top_k=20",
]


@pytest.fixture(scope="module")
def mixture(tmp_path_factory, tiny_tokens):
    out = tmp_path_factory.mktemp("regmix") / "mix"
    return execute(STAGE, [str(tiny_tokens)], sets=[*SETS, "confirm=true"], out=out)


def test_mixture_artifact_records_weights_prior_fit_and_proxies(mixture):
    manifest = artifact.read_manifest(mixture)
    assert manifest["kind"] == "mixture" and not (mixture / "_work").exists()
    weights = read_mixture(mixture)
    assert set(weights) == {"literature", "code", "math"}
    payload = json.loads((mixture / "mixture.json").read_text())
    assert sum(payload["weights"].values()) == pytest.approx(1)
    assert payload["prior"]["kind"] == "dirichlet"
    assert set(payload["fit"]) == {"lightgbm", "linear"}
    assert set(payload["predicted_target"]) == {"chosen", "natural", "uniform"}
    rows = [json.loads(x) for x in (mixture / "proxies.jsonl").read_text().splitlines()]
    assert len(rows) == N and all(np.isfinite(r["target"]) for r in rows)
    assert all(set(r["cv_prediction"]) == {"lightgbm", "linear"} for r in rows)
    assert (mixture / "regmix.png").stat().st_size > 10_000


def test_metrics_report_fit_quality_and_the_confirmation_verdict(mixture):
    from scipy.stats import spearmanr

    m = artifact.read_manifest(mixture)["metrics"]
    assert m["n_proxies"] == N and m["model"] in ("lightgbm", "linear")
    # The reported Spearman is the chosen model's cross-validated rank correlation with
    # the proxies' targets, recomputed here from what proxies.jsonl records.
    rows = [json.loads(x) for x in (mixture / "proxies.jsonl").read_text().splitlines()]
    for name, quality in m["fit"].items():
        rho = spearmanr([r["target"] for r in rows], [r["cv_prediction"][name] for r in rows])
        assert quality["spearman"] == pytest.approx(np.nan_to_num(rho.statistic), abs=1e-9)
    assert m["spearman"] == max(q["spearman"] for q in m["fit"].values())  # model: auto
    # The confirmation targets are the domain-weighted val losses of its two proxies.
    c = m["confirm"]
    weights = json.loads((mixture / "mixture.json").read_text())["target"]["domain_weights"]
    for arm in ("chosen", "natural"):
        losses = c["per_domain"][arm]
        assert set(losses) == {"literature", "code", "math"}
        assert c[arm] == pytest.approx(sum(w * losses[d] for d, w in weights.items()))
    assert c["chosen"] != c["natural"]  # two different mixtures trained two different proxies
    assert c["chosen_beats_natural"] == (c["chosen"] < c["natural"])


def test_finished_proxies_are_not_trained_again(tmp_path, tiny_tokens):
    """A partial run holding one proxy's result keeps it: only the others are trained."""
    sets = [*SETS, "proposals.seed=7"]
    _, _, art_id, out = plan(STAGE, [str(tiny_tokens)], None, sets, tmp_path / "mix")
    work = out.with_name(out.name + ".partial")
    (work / "_work" / "proxies").mkdir(parents=True)
    (work / artifact.RUN_STATE).write_text(json.dumps({"id": art_id, "stage": "regmix"}))
    planted = {
        "name": "0000", "weights": {"literature": 1.0},
        "val_loss_per_domain": {"literature": 42.0, "code": 42.0, "math": 42.0},
        "val_loss": 42.0, "train_loss": 42.0, "domain_shares": {}, "tokens": 1, "params": 1,
        "seconds": 0.0,
    }  # fmt: skip
    (work / "_work" / "proxies" / "0000.json").write_text(json.dumps(planted))
    execute(STAGE, [str(tiny_tokens)], sets=sets, out=out)
    rows = [json.loads(x) for x in (out / "proxies.jsonl").read_text().splitlines()]
    assert rows[0]["target"] == pytest.approx(42.0)
    assert all(r["target"] < 20 for r in rows[1:])  # the others were really trained


def test_a_mixture_artifact_drives_pretrain_sampling(mixture, tmp_path, tiny_tokens):
    from stages.pretrain import STAGE as PRETRAIN

    sets = ["model.vocab_size=512", "model.d_model=32", "model.n_layers=1", "model.n_heads=2",
            "model.n_kv_heads=1", "model.ffn_hidden=64", "model.max_seq_len=64",
            "train.steps=8", "train.batch_size=16", "train.seq_len=64", "train.peak_probe_s=0",
            "train.checkpoint_every=0", "schedule.warmup_steps=1", "data.val_batches=1"]  # fmt: skip
    model = execute(PRETRAIN, [str(tiny_tokens), f"mixture={mixture}"], sets=sets,
                    out=tmp_path / "model")  # fmt: skip
    seen = artifact.read_manifest(model)["metrics"]["domain_shares"]
    wanted = read_mixture(mixture)
    for domain, share in wanted.items():
        assert seen[domain] == pytest.approx(share, abs=0.08), (seen, wanted)
