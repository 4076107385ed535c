"""bf16 pretraining throughput and MFU of a ~1.2B llmforge model through the real stage.

Runs `llmforge pretrain` in this process (`llmforge.stage.execute`, the function the
command calls) on a tokens artifact built on the spot from synthetic documents (see
gpu_data.py), with intra-document masking (FlexAttention on CUDA), `train.compile`
and the fused linear cross-entropy. The model is Llama-3.2-1B's shape: 16 layers of 2048,
32 query / 8 KV heads, SwiGLU 8192, vocab 128256, tied embeddings (1.24B parameters).

Reported: steady tokens/s (median of the metric windows after the first, which holds the
compile), MFU against a bf16 matmul peak measured in this process (8192^3 products; the
higher of a probe before and one after training), peak GPU memory, and the compile
window. While it trains it prints the throughput of each new window, so a run cut short
by a timeout still reports how fast it went. MFU counts
6 x matmul weights + 12 x layers x heads x head_dim x seq per token (full-square
attention, as torchtitan and PaLM count); the 6N-only figure is printed too.

    python bench/gpu_pretrain.py [--steps 100] [--batch 4] [--seq 4096] [--json F]
    python bench/gpu_pretrain.py --dry    # a tiny model, 3 steps on CPU: checks the harness
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import gpu_harness  # noqa: E402
from bench.gpu_data import tokens_artifact  # noqa: E402


@dataclass(frozen=True)
class Shape:
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_hidden: int
    vocab_size: int


LLAMA_1B = Shape(2048, 16, 32, 8, 8192, 128256)
TINY = Shape(64, 2, 4, 2, 128, 512)


def pretrain_config(shape: Shape, args: argparse.Namespace) -> dict:
    """The pretrain stage's YAML for this run (what a user would write)."""
    return {
        "model": dict(
            **shape.__dict__,
            max_seq_len=args.seq,
            rope_theta=500000.0,
            tie_embeddings=True,
            fused_ce=True,
        ),
        "data": {"intra_doc_mask": True, "val_batches": 2},
        "train": dict(
            steps=args.steps,
            batch_size=args.batch,
            seq_len=args.seq,
            precision="fp32" if args.dry else "bf16",
            compile=not args.no_compile,
            log_every=args.log_every,
            val_every=0,
            checkpoint_every=0,
            peak_probe_s=0.5,
        ),
        "optim": {"name": "adamw", "lr": 3e-4, "weight_decay": 0.1},
        "schedule": {"kind": "wsd", "warmup_steps": max(1, args.steps // 10)},
        "spike": {"policy": "off"},
    }


def _windows(metrics: Path) -> list[dict]:
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    return [r for r in rows if "tokens_per_s" in r]


def steady_tokens_per_s(metrics: Path) -> tuple[float, float, int]:
    """(median tokens/s of the windows after the first, seconds of the first, windows)."""
    windows = _windows(metrics)
    if not windows:
        raise SystemExit(f"gpu_pretrain: no throughput lines in {metrics}")
    first = windows[0]
    first_s = first["tokens"] / first["tokens_per_s"]
    later = [r["tokens_per_s"] for r in windows[1:]] or [first["tokens_per_s"]]
    return statistics.median(later), first_s, len(windows)


class Progress(threading.Thread):
    """Prints a FIGURE line for each new metrics window while the stage trains, so a run
    killed by gpu-check's timeout still leaves its latest throughput in the log."""

    def __init__(self, metrics: Path, flops_per_token: float, peak: float):
        super().__init__(daemon=True)
        self.metrics, self.fpt, self.peak = metrics, flops_per_token, peak
        self.done = threading.Event()

    def run(self) -> None:
        seen = 0
        while not self.done.wait(5.0):
            try:
                windows = _windows(self.metrics) if self.metrics.is_file() else []
            except (OSError, ValueError):  # a line being written
                continue
            if len(windows) > seen:
                seen, last = len(windows), windows[-1]
                mfu = last["tokens_per_s"] * self.fpt / self.peak
                print(f"FIGURE: (so far, step {last['step']}) {last['tokens_per_s']:,.0f} tok/s, "
                      f"MFU {mfu:.1%}", flush=True)  # fmt: skip


def peak_memory_gib() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**30


def run(args: argparse.Namespace, work: Path) -> dict:
    import torch

    from llmforge.model.flops import count_params, flops_per_token, matmul_params_per_token
    from llmforge.model.gpt import ModelConfig
    from llmforge.stage import execute
    from llmforge.train.metrics import measure_peak_flops
    from stages.pretrain import STAGE

    shape = TINY if args.dry else LLAMA_1B
    tokens_needed = args.steps * args.batch * args.seq * 1.3
    words = (20, 120) if args.dry else (300, 3000)
    docs = int(tokens_needed / (1.2 * sum(words) / 2)) + 50
    start = time.perf_counter()
    tokens = tokens_artifact(work, docs, words, vocab=512 if args.dry else 8192)
    data_s = time.perf_counter() - start
    cfg_dict = pretrain_config(shape, args)
    cfg_path = work / "pretrain.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg_dict, sort_keys=False))
    cfg = ModelConfig(**cfg_dict["model"])
    fpt, fpt_6n = flops_per_token(cfg, args.seq), 6 * matmul_params_per_token(cfg)
    precision = cfg_dict["train"]["precision"]
    peak_before = measure_peak_flops(precision, seconds=1.0)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    progress = Progress(work / "model.partial" / "metrics.jsonl", fpt, peak_before)
    progress.start()
    start = time.perf_counter()
    try:
        out = execute(STAGE, [str(tokens)], config_path=cfg_path, out=work / "model")
    finally:
        progress.done.set()
    train_s = time.perf_counter() - start
    tps, first_s, windows = steady_tokens_per_s(out / "metrics.jsonl")
    # the higher of the probes before and after (clocks may still be ramping before)
    peak = max(peak_before, measure_peak_flops(precision, seconds=2.0))
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "part": "pretrain", "params": count_params(cfg)["total"], "steps": args.steps,
        "tokens_per_step": args.batch * args.seq, "tokens_per_s": tps,
        "mfu": tps * fpt / peak, "mfu_6n": tps * fpt_6n / peak, "peak_flops": peak,
        "engine_mfu": manifest["metrics"].get("mfu"), "peak_mem_gib": peak_memory_gib(),
        "first_window_s": first_s, "windows": windows, "train_s": train_s, "data_s": data_s,
        "final_loss": manifest["metrics"].get("final_train_loss"),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "precision": precision, "compile": cfg_dict["train"]["compile"],
    }  # fmt: skip


def report(r: dict) -> str:
    mem = "n/a" if r["peak_mem_gib"] is None else f"{r['peak_mem_gib']:.1f} GiB"
    print(f"{r['device']}: {r['params'] / 1e9:.2f}B params, {r['steps']} steps of "
          f"{r['tokens_per_step']} tokens, {r['precision']}, compile {r['compile']}, document "
          f"masks, fused CE")  # fmt: skip
    print(f"  data {r['data_s']:.0f} s, stage {r['train_s']:.0f} s (first window "
          f"{r['first_window_s']:.0f} s incl. compile), final loss {r['final_loss']}")  # fmt: skip
    print(f"  steady tokens/s {r['tokens_per_s']:,.0f}; matmul peak {r['peak_flops'] / 1e12:.0f} "
          f"TFLOP/s (measured here)")  # fmt: skip
    print(f"  MFU {r['mfu']:.1%} (6N+attention; target >= 45%), {r['mfu_6n']:.1%} (6N only), "
          f"engine's own {r['engine_mfu'] or float('nan'):.1%}; peak memory {mem}")  # fmt: skip
    return f"{r['tokens_per_s']:,.0f} tok/s, MFU {r['mfu']:.1%}, peak {mem}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=4, help="rows per step")
    p.add_argument("--seq", type=int, default=4096, help="tokens per row")
    p.add_argument("--log-every", type=int, default=10, help="steps per throughput window")
    p.add_argument("--no-compile", action="store_true", help="train eagerly")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    gpu_harness.add_options(p, (), "tiny model, 3 steps on CPU (CI)")
    args = gpu_harness.parse(p, argv, ())
    if args.dry:
        args.steps, args.batch, args.seq, args.log_every = 3, 2, 64, 1
        args.no_compile = True
    for key in ("steps", "batch", "seq", "log_every"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    gpu_harness.need_cuda(args, "gpu_pretrain")
    with tempfile.TemporaryDirectory(prefix="llmforge-gpu-pretrain-") as tmp:
        result = run(args, args.work or Path(tmp))
    line = report(result)
    print(f"FIGURE: {line}")
    gpu_harness.append_json(args.json, [{**result, "figure": line}])


if __name__ == "__main__":
    main()
