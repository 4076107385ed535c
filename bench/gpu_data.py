"""Synthetic inputs for the GPU benchmarks, made on the spot (a GPU node has no network).

- `tokens_artifact`: documents of random pseudo-words (a few hundred to a few thousand
  tokens each, so a 4096-token row packs a handful and intra-document masking matters),
  run through the real `tokenize` stage, which trains its BPE on them.
- `post_data`: chat, preference, RL-prompt and eval files from `llmforge.data.synth`, the
  generators behind the tiny demo (docs/data.md).
- `stock_model`, `custom_model`: a random stock Llama and a random llmforge-family model
  (gated attention, which only our own class exports), published as `model` artifacts
  with a BPE trained on the chat data.

Nothing here is timed; the benchmarks time what they run on these inputs.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["th", "sh", "ch", "qu"]


def _words(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choices(SYLLABLES, k=rng.randint(1, 3))) for _ in range(n)]


def write_corpus(path: Path, docs: int, words: tuple[int, int], seed: int = 0) -> Path:
    """`docs` jsonl documents of `words` (min, max) pseudo-words drawn from a 3k-word lexicon."""
    rng = random.Random(seed)
    lexicon = _words(rng, 3000)
    weights = [1.0 / (rank + 1) for rank in range(len(lexicon))]  # Zipf-like frequencies
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(docs):
            n = rng.randint(*words)
            text = " ".join(rng.choices(lexicon, weights, k=n))
            f.write(json.dumps({"id": f"syn{i}", "text": text}) + "\n")
    return path


def tokens_artifact(root: Path, docs: int, words: tuple[int, int], vocab: int) -> Path:
    """A `tokens` artifact (BPE of `vocab` entries inside) made by the real tokenize stage."""
    from llmforge.stage import execute
    from stages.tokenize import STAGE

    corpus = write_corpus(root / "corpus" / "synthetic.jsonl", docs, words)
    sets = [f"vocab_size={vocab}", "val_fraction=0.01", "val_min_docs=4"]
    return execute(STAGE, [f"synthetic={corpus}"], sets=sets, out=root / "tokens")


def post_data(root: Path, rows: int = 256, seed: int = 0) -> dict[str, Path]:
    """sft, dpo, rl and eval jsonl files of synthetic math chat (see llmforge.data.synth)."""
    from llmforge.data.synth import chat, prefs, tasks
    from llmforge.data.synth.splits import mixed_difficulty, sample
    from llmforge.data.tiny import stream, write_files

    def draw(part: str, split: str, n: int, **kw):
        return sample(stream(seed, part), split, n, mixed_difficulty(), **kw)

    files = {
        "sft.jsonl": chat.sft_rows(draw("sft", "train", rows), stream(seed, "c")),
        "dpo.jsonl": prefs.preference_rows(draw("dpo", "train", rows), stream(seed, "slip")),
        "rl.jsonl": tasks.math_tasks(draw("rl", "rl", rows // 4, unique="key"), "rl"),
        "eval.jsonl": tasks.math_tasks(draw("eval", "eval", 32, unique="key"), "eval"),
    }
    write_files(root, files)
    return {name.split(".")[0]: root / name for name in files}


def chat_tokenizer(root: Path, sft_file: Path, vocab: int = 1024) -> Path:
    """A byte-level BPE with llmforge's chat template, trained on the SFT conversations."""
    from llmforge.data import tokenizer as toklib

    texts = []
    for line in sft_file.read_text(encoding="utf-8").splitlines():
        texts += [m["content"] for m in json.loads(line)["messages"]]
    tok = toklib.train_bpe(texts, vocab)
    out = root / "tokenizer"
    toklib.save_for_transformers(tok, out)
    return out


def _publish_model(out: Path, config: dict, write) -> Path:
    """Publish a `model` artifact whose payload `write(dir)` fills (stages take artifacts)."""
    from llmforge import artifact

    run = artifact.Run(out, artifact.compute_id("init", config, []), "model", "init", config, [])
    artifact.prepare_partial(run, replace=True)
    write(run.dir)
    run.commit({"init": config["kind"]}, replace=True)
    return out


def stock_model(root: Path, tokenizer_dir: Path, hidden: int = 256, layers: int = 4) -> Path:
    """A random stock Llama with the tokenizer, as a `model` artifact."""
    from transformers import AutoTokenizer

    from llmforge.data.tokenizer import copy_tokenizer_files
    from llmforge.model.hf import random_llama

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))

    def write(out: Path) -> None:
        random_llama(tok, hidden, layers, max_positions=1024).save_pretrained(str(out))
        copy_tokenizer_files(tokenizer_dir, out)

    config = {"kind": "llama", "hidden": hidden, "layers": layers}
    return _publish_model(root / "llama", config, write)


def custom_model(root: Path, tokenizer_dir: Path, hidden: int = 256, layers: int = 4) -> Path:
    """A random llmforge GPT with gated attention: a `model` artifact of our own class."""
    from transformers import AutoTokenizer

    from llmforge.model.gpt import GPT, ModelConfig
    from llmforge.model.hf import export_hf, hf_architecture

    vocab = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    cfg = ModelConfig(vocab_size=vocab, d_model=hidden, n_layers=layers, n_heads=4, n_kv_heads=2,
                      ffn_hidden=2 * hidden, max_seq_len=1024, gated_attn=True)  # fmt: skip
    assert hf_architecture(cfg) == "llmforge", "gated attention should need our own class"
    config = {"kind": "llmforge", "hidden": hidden, "layers": layers}
    return _publish_model(
        root / "llmforge-gpt", config, lambda out: export_hf(GPT(cfg), out, tokenizer_dir)
    )
