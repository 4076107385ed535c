"""Benchmark: eval throughput on CPU and how it scales with batch size.

    .venv/bin/python bench/eval_bench.py [--prompts 16] [--new-tokens 24]

A random ~1M-parameter Llama with a locally trained 1k BPE (nothing from a hub) runs:

- generative eval (`llmforge.eval.generative.run_task`: sampling with the transformers
  backend, then the math verifier) on held-out arithmetic prompts, one sample each, at
  several generation batch sizes; the baseline is batch size 1 in the same run;
- validation loss (`llmforge.eval.loss.sum_nll`) over 256-token windows at several batch
  sizes, again against batch size 1.

It prints samples/s (tokens/s for loss) and the speed-up over the baseline.
"""

from __future__ import annotations

import argparse
import os
import sysconfig
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LLMFORGE_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def corpus(n_chars: int = 400_000) -> list[str]:
    from llmforge.eval.tasks import arithmetic_tasks

    texts = [r["prompt"] for r in arithmetic_tasks(200, 2, seed=1).rows]
    for f in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        texts.append(f.read_text(encoding="utf-8", errors="replace"))
        if sum(map(len, texts)) > n_chars:
            break
    return texts


def build_model(root: Path) -> Path:
    from transformers import AutoTokenizer

    from llmforge.data.tokenizer import save_for_transformers, train_bpe
    from llmforge.model.hf import random_llama

    save_for_transformers(train_bpe(corpus(), vocab_size=1024), root)
    tok = AutoTokenizer.from_pretrained(str(root))
    random_llama(tok, 128, 4, ffn_hidden=384, max_positions=1024).save_pretrained(str(root))
    return root


def bench_generation(path: Path, prompts: int, new_tokens: int, sizes: list[int]) -> list:
    from llmforge.eval import generative
    from llmforge.eval.suite import load
    from llmforge.eval.tasks import arithmetic_tasks
    from llmforge.gen import TransformersGenerator

    model, tok = load(path)
    task = arithmetic_tasks(prompts, 2)
    warm = TransformersGenerator(model, tok, batch_size=4)
    generative.run_task(warm, arithmetic_tasks(4, 2, seed=9), generative.Sampling(n=1))
    rows = []
    for size in sizes:
        gen = TransformersGenerator(model, tok, batch_size=size)
        sampling = generative.Sampling(n=1, max_new_tokens=new_tokens, batch_prompts=size)
        start = time.perf_counter()
        result = generative.run_task(gen, task, sampling)
        seconds = time.perf_counter() - start
        tokens = sum(r["tokens"] for r in result.records)
        rows.append((size, len(result.records) / seconds, tokens / seconds))
    return rows


def bench_loss(path: Path, windows: int, sizes: list[int]) -> list:
    import numpy as np

    from llmforge.eval.loss import sum_nll
    from llmforge.eval.suite import load

    model, tok = load(path)
    ids = [t for text in corpus() for t in tok(text, add_special_tokens=False)["input_ids"]]
    chunks = [np.asarray(ids[i * 256 : i * 256 + 257]) for i in range(windows)]
    rows = []
    for size in sizes:
        start = time.perf_counter()
        _, count = sum_nll(model, chunks, size)
        rows.append((size, count / (time.perf_counter() - start)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--windows", type=int, default=32)
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = build_model(Path(tmp))
        gen = bench_generation(path, args.prompts, args.new_tokens, [1, 4, 16])
        loss = bench_loss(path, args.windows, [1, 4, 16])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.prompts} prompts x {args.new_tokens} new tokens"
    )
    print(f"{'generative eval batch':>22} {'samples/s':>10} {'gen tok/s':>10} {'vs batch 1':>10}")
    for size, sps, tps in gen:
        print(f"{size:>22} {sps:>10.2f} {tps:>10.1f} {sps / gen[0][1]:>9.2f}x")
    print(f"{'loss batch (256 tok)':>22} {'tokens/s':>10} {'':>10} {'vs batch 1':>10}")
    for size, tps in loss:
        print(f"{size:>22} {tps:>10.0f} {'':>10} {tps / loss[0][1]:>9.2f}x")


if __name__ == "__main__":
    main()
