"""Builds a random tiny Llama and publishes it as a `model` artifact, for tests."""

from pathlib import Path

from llmforge import artifact
from llmforge.data.tokenizer import copy_tokenizer_files


def publish_random_llama(
    out: Path,
    tokenizer_dir: Path,
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
    logit_scale: float = 1.0,
) -> Path:
    """`logit_scale` multiplies the tied embeddings, so the next-token distribution is that
    much more peaked (a teacher whose preferences a student can be seen to pick up)."""
    import torch
    from transformers import AutoTokenizer

    from llmforge.model.hf import random_llama

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    model = random_llama(tok, hidden, layers, seed=seed)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(logit_scale)
    config = {"hidden": hidden, "layers": layers, "seed": seed, "logit_scale": logit_scale}
    return publish_model(model, config, out, tokenizer_dir)


def fit_and_save(model, batch, steps: int, lr: float, out: Path, tokenizer_dir: Path) -> Path:
    """Train `model` for `steps` AdamW steps on `batch(step) -> (input_ids, labels)` and save
    it as a transformers directory with the tokenizer: a tiny policy taught one behaviour."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for step in range(steps):
        ids, labels = batch(step)
        opt.zero_grad()
        model(input_ids=ids, labels=labels).loss.backward()
        opt.step()
    model.save_pretrained(str(out))
    copy_tokenizer_files(Path(tokenizer_dir), out)
    return out


def publish_answering_llama(
    out: Path, tokenizer_dir: Path, answers: dict[str, str], seed: int = 0, steps: int = 60
) -> Path:
    """A random tiny Llama fitted for a few steps to give `answers` (prompt -> reply) in
    no_think chat form, published as a `model` artifact: a model that answers in a known
    style, for tests that need two models to disagree in a way they can check."""
    import torch
    from transformers import AutoTokenizer

    from llmforge.model.hf import random_llama

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    model = random_llama(tok, 64, 2, seed=seed)
    texts = [
        tok.apply_chat_template(
            [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
            tokenize=False,
            enable_thinking=False,
        )
        for q, a in answers.items()
    ]
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        model(**batch, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    config = {"answers": answers, "seed": seed, "steps": steps}
    return publish_model(model, config, out, tokenizer_dir)


def publish_model(model, config: dict, out: Path, tokenizer_dir) -> Path:
    """Publish `model` and the tokenizer's files as an "init" model artifact at `out`."""
    run = artifact.Run(out, artifact.compute_id("init", config, []), "model", "init", config, [])
    artifact.prepare_partial(run, replace=True)
    model.save_pretrained(str(run.dir), safe_serialization=True)
    copy_tokenizer_files(Path(tokenizer_dir), run.dir)
    run.commit({"params": sum(p.numel() for p in model.parameters())}, replace=True)
    return out
