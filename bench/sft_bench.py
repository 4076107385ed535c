"""Benchmark: `llmforge sft` training throughput against TRL's SFTTrainer used directly.

    .venv/bin/python bench/sft_bench.py [--steps 40] [--rows 400]

Both sides train the same random tiny Llama (the project tokenizer, trained here on the
chat data) on the same synthetic arithmetic chats, with the same batch, max_length,
assistant-only loss and packing setting. Throughput is trained tokens per second of
`trainer.train()` alone (the stage also runs its held-out and format checks, which are
switched off here so both sides do the same work). A second table compares packed and
unpacked llmforge runs at the packed batch size ENVIRONMENT.md recommends on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LLMFORGE_QUIET", "1")


def make_inputs(root: Path, rows: int) -> tuple[Path, Path]:
    """Chat jsonl and a model artifact (random Llama + BPE trained on the chats)."""
    from transformers import AutoTokenizer

    from llmforge import artifact
    from llmforge.data import tokenizer as toklib
    from llmforge.data.synth import chat, splits
    from llmforge.model.hf import random_llama

    rng = random.Random(0)
    data = chat.sft_rows(splits.sample(rng, "train", rows, 1), rng)
    chats = root / "chat.jsonl"
    chats.write_text("".join(json.dumps(r) + "\n" for r in data))
    texts = [m["content"] + " " + m.get("reasoning", "") for r in data for m in r["messages"]]
    toklib.save_for_transformers(toklib.train_bpe(texts, 512), root / "tok")
    tok = AutoTokenizer.from_pretrained(str(root / "tok"))
    run = artifact.Run(root / "model", "bench-model", "model", "init", {}, [])
    artifact.prepare_partial(run, replace=True)
    model = random_llama(tok, 128, 2, ffn_hidden=256, max_positions=1024)
    model.save_pretrained(str(run.dir), safe_serialization=True)
    tok.save_pretrained(str(run.dir))
    run.commit({})
    return chats, root / "model"


def llmforge_run(model: Path, chats: Path, out: Path, sets: list[str]) -> dict:
    from llmforge.stage import execute
    from stages.sft import STAGE

    base = [
        "style.enabled=false",
        "eval.format_prompts=0",
        "sft.heldout_fraction=0",
        "train.save_steps=100000",
        "train.logging_steps=1000",
        "train.warmup_ratio=0",
    ]
    path = execute(STAGE, [f"model={model}", f"chat={chats}"], sets=base + sets, out=out)
    metrics = json.loads((path / "manifest.json").read_text())["metrics"]
    return {"tokens": metrics["tokens"], "seconds": metrics["train_seconds"]}


def trl_run(model: Path, chats: Path, out: Path, steps: int, batch: int, packing: bool) -> dict:
    """The baseline: SFTTrainer straight from TRL, the same settings, no llmforge code."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = [json.loads(line) for line in chats.read_text().splitlines()]
    ds = Dataset.from_list(
        [
            {
                "messages": [
                    {
                        "role": m["role"],
                        "content": m["content"],
                        "reasoning": m.get("reasoning", ""),
                    }
                    for m in r["messages"]
                ],
                "chat_template_kwargs": {"enable_thinking": r["mode"] == "think"},
            }
            for r in rows
        ]
    )
    args = SFTConfig(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        report_to="none",
        max_steps=steps,
        per_device_train_batch_size=batch,
        max_length=512,
        packing=packing,
        assistant_only_loss=True,
        learning_rate=1e-3,
        save_strategy="no",
        logging_steps=1000,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(str(model)),
        args=args,
        train_dataset=ds,
        processing_class=AutoTokenizer.from_pretrained(str(model)),
    )
    t0 = time.time()
    trainer.train()
    seconds = time.time() - t0
    tokens = [r["num_tokens"] for r in trainer.state.log_history if "num_tokens" in r][-1]
    return {"tokens": tokens, "seconds": seconds}


def row(name: str, r: dict, base: dict | None = None) -> str:
    tps = r["tokens"] / r["seconds"]
    ratio = f"{tps / (base['tokens'] / base['seconds']):.2f}" if base else "1.00"
    return (
        f"| {name:<40} | {int(r['tokens']):>8} | {r['seconds']:>7.1f} | {tps:>9.0f} | {ratio:>5} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        chats, model = make_inputs(root, a.rows)
        common = [
            f"train.max_steps={a.steps}",
            f"train.batch_size={a.batch}",
            "train.max_length=512",
            "train.lr=0.001",
        ]
        # TRL runs first and last and keeps its faster run, so warm-up in the first run of
        # the process (and load drift on a shared machine) does not count against it.
        trl_first = trl_run(model, chats, root / "trl", a.steps, a.batch, packing=False)
        ours = llmforge_run(model, chats, root / "ours", common + ["sft.packing=false"])
        trl_last = trl_run(model, chats, root / "trl2", a.steps, a.batch, packing=False)
        trl = min(trl_first, trl_last, key=lambda r: r["seconds"] / r["tokens"])
        packed_common = [
            f"train.max_steps={a.steps}",
            "train.batch_size=2",
            "train.max_length=512",
            "train.lr=0.001",
        ]
        unpacked2 = llmforge_run(model, chats, root / "u2", packed_common + ["sft.packing=false"])
        packed2 = llmforge_run(model, chats, root / "p2", packed_common + ["sft.packing=true"])
    head = f"| {'run':<40} | {'tokens':>8} | {'train s':>7} | {'tokens/s':>9} | ratio |"
    rule = "|" + "-" * 42 + "|" + "-" * 10 + "|" + "-" * 9 + "|" + "-" * 11 + "|" + "-" * 7 + "|"
    print(
        head,
        rule,
        row(f"TRL SFTTrainer (batch {a.batch}, best of 2)", trl),
        row(f"llmforge sft (batch {a.batch})", ours, trl),
        sep="\n",
    )
    print()
    print(
        head,
        rule,
        row("llmforge sft unpacked (batch 2)", unpacked2),
        row("llmforge sft packed BFD (batch 2)", packed2, unpacked2),
        sep="\n",
    )


if __name__ == "__main__":
    main()
