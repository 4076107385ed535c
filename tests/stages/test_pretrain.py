"""The pretrain stage through the CLI: publish, cache hit, transformers load, mixture input,
bad config, and a SIGKILLed run that resumes to bitwise the same weights."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from llmforge import artifact
from stages.app import app
from tests.stages.pretrain_helpers import metrics_lines, publish_mixture, sets

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def pretrain(*args, extra=()):
    return runner.invoke(app, ["pretrain", *map(str, args), *sets(*extra), "-q"])


BASE = ["train.steps=12", "train.val_every=4"]


@pytest.fixture(scope="module")
def base(tiny_tokens, tmp_path_factory):
    out = tmp_path_factory.mktemp("pt") / "base"
    result = pretrain(tiny_tokens, "-o", out, extra=BASE)
    assert result.exit_code == 0, result.output
    return out, result


def test_publishes_a_model_transformers_loads(base):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, result = base
    assert result.stdout.strip() == str(out)
    manifest = artifact.read_manifest(out)
    m = manifest["metrics"]
    assert m["steps"] == 12 and set(m["val_loss_per_domain"]) == {"literature", "code", "math"}
    # Validation at steps 4, 8 and 12 falls each time, well below the ln(512) = 6.24 nats of
    # an untrained model, and the reported final loss is the last of them.
    vals = [r["val_loss"] for r in metrics_lines(out) if "val_loss" in r]
    assert len(vals) == 3 and vals[0] > vals[1] > vals[2] == m["final_val_loss"]
    assert m["final_val_loss"] < vals[0] - 0.4 and m["final_val_loss"] < math.log(512) - 1.0
    assert artifact.verify(out) == []
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    ids = torch.tensor([tok.encode("def f(x):")])
    assert model(ids).logits.shape == (1, ids.shape[1], 512)
    lines = metrics_lines(out)
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "mfu", "domain_shares"} <= set(lines[0])


def test_same_command_is_a_cache_hit(base, tiny_tokens):
    out, _ = base
    before = (out / "manifest.json").stat().st_mtime_ns
    result = pretrain(tiny_tokens, "-o", out, extra=BASE)
    assert result.exit_code == 0 and result.stdout.strip() == str(out)
    assert (out / "manifest.json").stat().st_mtime_ns == before


def test_mixture_artifact_drives_sampling(tiny_tokens, tmp_path):
    weights = {"literature": 0.1, "code": 0.1, "math": 0.8}
    mix = publish_mixture(tmp_path / "mix", weights)
    out = tmp_path / "model"
    result = pretrain(tiny_tokens, f"mixture={mix}", "-o", out, extra=["train.steps=30"])
    assert result.exit_code == 0, result.output
    shares = artifact.read_manifest(out)["metrics"]["domain_shares"]
    for domain, w in weights.items():
        assert shares[domain] == pytest.approx(w, abs=0.1), shares


def test_bad_config_exits_2_naming_the_key(tiny_tokens, tmp_path):
    result = pretrain(
        tiny_tokens,
        "-o",
        tmp_path / "m",
        extra=["data.stages=[{weights: {poetry: 1.0}}]", "train.steps=2"],
    )
    assert result.exit_code == 2
    assert "data.stages[0].weights" in result.output and "poetry" in result.output
    assert not (tmp_path / "m.partial").exists()
    small = pretrain(tiny_tokens, "-o", tmp_path / "v", extra=["model.vocab_size=100"])
    assert small.exit_code == 2 and "model.vocab_size" in small.output


def cli(tokens, out, *extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LLMFORGE_QUIET": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "stages.app",
        "pretrain",
        str(tokens),
        "-o",
        str(out),
        *sets(*extra),
    ]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_then_resume_gives_bitwise_equal_weights(tiny_tokens, tmp_path):
    extra = ("train.steps=40", "train.checkpoint_every=5", "train.precision=auto")
    killed = cli(tiny_tokens, tmp_path / "a", *extra)
    work = tmp_path / "a.partial" / "_work"
    deadline = time.time() + 300
    while not (work.exists() and any(p.name == "ckpt-00000010" for p in work.iterdir())):
        assert killed.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "a").exists() and work.exists()
    resumed = cli(tiny_tokens, tmp_path / "a", *extra)
    straight = cli(tiny_tokens, tmp_path / "b", *extra)
    assert resumed.wait() == 0, resumed.stderr.read().decode()[-2000:]
    assert straight.wait() == 0, straight.stderr.read().decode()[-2000:]
    a = load_file(tmp_path / "a" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(a[k].equal(b[k]) for k in a)
    steps = [x["step"] for x in metrics_lines(tmp_path / "a") if "loss" in x]
    assert steps == sorted(set(steps))  # the resumed run rewrote no step twice


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_1(tiny_tokens, tmp_path):
    proc = cli(tiny_tokens, tmp_path / "m", "train.steps=400", "train.checkpoint_every=0")
    metrics = tmp_path / "m.partial" / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().strip()):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 1
    assert "preempted" in proc.stderr.read().decode()
    ckpts = list((tmp_path / "m.partial" / "_work").glob("ckpt-*"))
    assert len(ckpts) == 1
