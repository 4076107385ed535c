"""Builds a random tiny Llama and publishes it as a `model` artifact, for tests."""

from pathlib import Path

from llmforge import artifact
from llmforge.data.tokenizer import copy_tokenizer_files


def publish_random_llama(
    out: Path, tokenizer_dir: Path, hidden: int = 64, layers: int = 2, seed: int = 0
) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(cfg)
    config = {"hidden": hidden, "layers": layers, "seed": seed}
    run = artifact.Run(out, artifact.compute_id("init", config, []), "model", "init", config, [])
    artifact.prepare_partial(run, replace=True)
    model.save_pretrained(str(run.dir), safe_serialization=True)
    copy_tokenizer_files(Path(tokenizer_dir), run.dir)
    run.commit({"params": sum(p.numel() for p in model.parameters())}, replace=True)
    return out
