"""Config overrides for a tiny, fast pretrain run, shared by the pretrain-family stage tests."""

import json
from pathlib import Path

from llmforge import artifact

TINY_SETS = [
    "model.vocab_size=512", "model.d_model=32", "model.n_layers=2", "model.n_heads=4",
    "model.n_kv_heads=2", "model.ffn_hidden=64", "model.max_seq_len=128", "model.nope_every=0",
    "train.batch_size=4", "train.seq_len=64", "train.log_every=2", "train.peak_probe_s=0.05",
    "train.precision=fp32", "optim.lr=0.003", "schedule.warmup_steps=2", "data.val_batches=1",
]  # fmt: skip


def sets(*extra: str) -> list[str]:
    out = []
    for item in [*TINY_SETS, *extra]:
        out += ["-s", item]
    return out


def publish_mixture(out: Path, weights: dict[str, float]) -> Path:
    """A `mixture` artifact, as regmix would write it."""
    run = artifact.Run(
        out, artifact.compute_id("regmix", weights, []), "mixture", "regmix", weights, []
    )
    artifact.prepare_partial(run, replace=True)
    (run.dir / "mixture.json").write_text(json.dumps({"weights": weights}))
    run.commit({}, replace=True)
    return out


def metrics_lines(model_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (model_dir / "metrics.jsonl").read_text().splitlines()]
