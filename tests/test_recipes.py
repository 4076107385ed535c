"""The shipped recipes load, and the full-scale one renders for Slurm at the right size."""

from pathlib import Path

from typer.testing import CliRunner

from llmforge import config
from llmforge.model.flops import count_params
from llmforge.slurm import SlurmConfig
from stages.app import app
from stages.pretrain import Config as PretrainConfig

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "smollm3-3b"
runner = CliRunner()


def test_smollm3_model_is_about_3b():
    cfg = config.load(PretrainConfig, RECIPE / "pretrain.yaml")
    m = cfg.model
    assert (m.n_layers, m.n_heads // m.n_kv_heads, m.nope_every, m.tie_embeddings) == (
        36,
        4,
        4,
        True,
    )
    total = count_params(m)["total"]
    assert 2.9e9 < total < 3.2e9, total
    budget = sum(stage.tokens for stage in cfg.data.stages)
    assert budget == 11_100_000_000_000


def test_smollm3_pretrain_renders_for_24_nodes(tmp_path, tiny_tokens):
    out = tmp_path / "base"
    result = runner.invoke(
        app,
        [
            "pretrain",
            str(tiny_tokens),
            "-c",
            str(RECIPE / "pretrain.yaml"),
            "-o",
            str(out),
            "--slurm",
            "--dry-run",
            "--slurm-config",
            str(RECIPE / "slurm-pretrain.yaml"),
        ],
    )
    assert result.exit_code == 0, result.output
    script = (tmp_path / "base.slurm" / "job.sbatch").read_text()
    for line in (
        "#SBATCH --nodes=24",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --exclusive",
        "#SBATCH --signal=B:USR1@300",
        "--nproc-per-node=8",
        "--rdzv-backend=c10d",
        "NCCL_SOCKET_IFNAME",
        "source .venv/bin/activate",
        f"-c {RECIPE / 'pretrain.yaml'}",
    ):
        assert line in script, line
    assert not (tmp_path / "base.slurm" / "jobid").exists()


def test_slurm_configs_load():
    for name in ("slurm-pretrain.yaml", "slurm-small.yaml"):
        config.load(SlurmConfig, RECIPE / name)
