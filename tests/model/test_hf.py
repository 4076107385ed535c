"""Export to each transformers family with logit parity; import from stock checkpoints."""

import json

import pytest
import torch

from llmforge.errors import BadInput
from llmforge.model.gpt import GPT, ModelConfig, MoEConfig, RopeScaling
from llmforge.model.hf import export_hf, hf_architecture, load_gpt

transformers = pytest.importorskip("transformers")
AutoModelForCausalLM = transformers.AutoModelForCausalLM

TOL = dict(atol=1e-4, rtol=1e-4)  # fp32; observed max |diff| is ~1e-6
BASE = dict(vocab_size=97, d_model=32, n_layers=4, n_heads=4, n_kv_heads=2, ffn_hidden=48)

FAMILIES = {
    "llama": dict(),
    "llama-untied-yarn": dict(
        tie_embeddings=False,
        rope_theta=500.0,
        max_seq_len=64,
        rope_scaling=RopeScaling(type="yarn", factor=4.0, original_max_seq_len=16),
    ),  # fmt: skip
    "llama-llama3-rope": dict(
        rope_theta=1e4, rope_scaling=RopeScaling(type="llama3", factor=8.0, original_max_seq_len=64)
    ),
    "qwen3": dict(qk_norm=True),
    "qwen3-head-dim": dict(qk_norm=True, head_dim=12, tie_embeddings=False),
    "smollm3": dict(nope_every=2, rope_theta=1000.0),
    "smollm3-head-dim": dict(nope_every=2, head_dim=12),
    "llmforge": dict(
        gated_attn=True,
        logit_softcap=3.0,
        attn_softcap=5.0,
        embed_scale=True,
        qk_norm=True,
        nope_every=2,
        moe=MoEConfig(n_experts=4, top_k=2, shared_expert=True, dense_layers=1),
    ),  # fmt: skip
}


def random_model(**kw) -> GPT:
    """A GPT whose norms and routing biases are not at their init values, so a missed or
    mismatched tensor in the export shows up in the logits."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(**{**BASE, **kw})).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if name.endswith("norm.weight") else 0.02))
        for moe in model.moe_layers():
            moe.expert_bias.normal_(0, 0.1)
    return model


def ids(b=2, s=24):
    return torch.randint(0, 97, (b, s), generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_export_parity_per_family(name, tmp_path):
    ours = random_model(**FAMILIES[name])
    family = name.split("-")[0]
    assert hf_architecture(ours.cfg) == family
    export_hf(ours, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == family
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    x = ids()
    with torch.no_grad():
        expected = ours(x).logits
        got = hf(x, use_cache=False).logits
    torch.testing.assert_close(got, expected, **TOL)


def test_bf16_export_loads_in_bf16_close_to_fp32(tmp_path):
    ours = random_model(**FAMILIES["qwen3"])
    export_hf(ours, tmp_path, dtype=torch.bfloat16)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert hf.model.embed_tokens.weight.dtype == torch.bfloat16
    x = ids()
    with torch.no_grad():
        diff = (hf(x, use_cache=False).logits.float() - ours(x).logits).abs().max()
    assert diff < 0.05  # bf16 weights and activations; measured ~5e-3 on logits of size ~1


def test_yarn_is_carried_in_rope_parameters(tmp_path):
    export_hf(random_model(**FAMILIES["llama-untied-yarn"]), tmp_path)
    rope = json.loads((tmp_path / "config.json").read_text())["rope_parameters"]
    assert rope["rope_type"] == "yarn" and rope["factor"] == 4.0
    assert rope["original_max_position_embeddings"] == 16 and rope["rope_theta"] == 500.0


def test_packed_rows_match_stock_llama_with_restarted_positions(tmp_path):
    ours = random_model()
    export_hf(ours, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    doc_ids = torch.tensor([[0] * 10 + [1] * 14, [0] * 3 + [1] * 21])
    positions = torch.cat(
        [
            torch.cat([torch.arange(10), torch.arange(14)]),
            torch.cat([torch.arange(3), torch.arange(21)]),
        ]
    ).view(2, 24)
    x = ids()
    with torch.no_grad():
        expected = ours(x, doc_ids=doc_ids).logits
        got = hf(x, position_ids=positions, use_cache=False).logits
    torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parametrize("name", ["llama", "llmforge"])
def test_roundtrip_through_export_keeps_every_tensor(name, tmp_path):
    ours = random_model(**FAMILIES[name])
    export_hf(ours, tmp_path)
    back = load_gpt(tmp_path)
    assert back.cfg == ours.cfg
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(back.state_dict()[key], value, rtol=0, atol=0)


def test_custom_family_survives_save_pretrained(tmp_path):
    """What TRL's trainer.save_model writes (no llmforge_model.json) loads both ways."""
    ours = random_model(**{**FAMILIES["llmforge"], "tie_embeddings": False})
    export_hf(ours, tmp_path / "export")
    AutoModelForCausalLM.from_pretrained(tmp_path / "export").save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved" / "llmforge_model.json").exists()
    x = ids()
    with torch.no_grad():
        expected = ours(x).logits
        again = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")(x).logits
        torch.testing.assert_close(again, expected, rtol=0, atol=0)
        torch.testing.assert_close(load_gpt(tmp_path / "saved")(x).logits, expected, rtol=0, atol=0)


def test_custom_family_trains_with_gradient_checkpointing(tmp_path):
    export_hf(random_model(**FAMILIES["llmforge"]), tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).train()
    hf.activation_checkpointing_enable()
    assert hf.model.gradient_checkpointing
    x = ids()
    loss = hf(x, labels=x).loss
    loss.backward()
    assert torch.isfinite(loss) and hf.model.embed_tokens.weight.grad.abs().sum() > 0


def test_custom_family_generates_like_a_greedy_loop(tmp_path):
    ours = random_model(**FAMILIES["llmforge"])
    export_hf(ours, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    prompt = ids(1, 5)
    with torch.no_grad():
        out = hf.generate(prompt, max_new_tokens=6, do_sample=False, eos_token_id=None)
        seq = prompt
        for _ in range(6):
            nxt = ours(seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert out.tolist() == seq.tolist()


@pytest.mark.parametrize(
    "mask, positions, expected",
    [
        (None, None, None),
        ([[1, 1, 1, 1]], None, None),  # no padding: the plain causal kernel
        ([[0, 0, 1, 1], [1, 1, 1, 0]], None, [[0, 0, 1, 1], [0, 0, 0, 1]]),
        ([[1, 1, 1, 1], [0, 0, 0, 0]], None, None),  # a row all padding changes nothing
        (None, [[0, 1, 0, 1]], [[0, 0, 1, 1]]),  # TRL's padding-free packing
        ([[1, 1, 1, 0]], [[0, 1, 0, 1]], [[0, 0, 1, 2]]),
        ([[1, 1, 1, 1]], [[0, 1, 2, 3]], None),
    ],
)
def test_documents_of_padded_and_packed_rows_with_one_host_read(
    mask, positions, expected, monkeypatch
):
    """At most one read back per forward (on a GPU each waits for the device); it used to
    be two when the mask had padding or came with position_ids."""
    from llmforge.model import hf
    from tests.device_probe import host_reads, lazy_device

    def on_device(rows):
        return None if rows is None else torch.tensor(rows).to(lazy_device())

    reads = host_reads(monkeypatch, hf.__file__)
    got = hf._documents(on_device(mask), on_device(positions))
    assert len(reads) == (0 if mask is None and positions is None else 1), reads
    assert (None if got is None else got.cpu().tolist()) == expected


def test_custom_family_left_padding_does_not_leak(tmp_path):
    ours = random_model(**FAMILIES["llmforge"])
    export_hf(ours, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    x = ids(1, 6)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), x], dim=1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        got = hf(padded, attention_mask=mask).logits[:, 3:]
    torch.testing.assert_close(got, ours(x).logits, **TOL)


def test_custom_family_reads_packing_from_position_ids(tmp_path):
    ours = random_model(**FAMILIES["llmforge"])
    export_hf(ours, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    x = ids(1, 10)
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0, 1, 2]])
    doc_ids = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 2, 2, 2]])
    with torch.no_grad():
        got = hf(x, position_ids=positions).logits
        torch.testing.assert_close(got, ours(x, doc_ids=doc_ids).logits, **TOL)


STOCK = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 8}),
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", {"no_rope_layer_interval": 2}),
}


@pytest.mark.parametrize("family", list(STOCK))
def test_import_stock_checkpoint(family, tmp_path):
    config_name, model_name, extra = STOCK[family]
    config = getattr(transformers, config_name)(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=family != "llama", rope_parameters={"rope_type": "default", "rope_theta": 777.0},
        bos_token_id=None, eos_token_id=None, pad_token_id=None, **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    stock = getattr(transformers, model_name)(config).eval()
    with torch.no_grad():
        for p in stock.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    stock.save_pretrained(tmp_path)
    ours = load_gpt(tmp_path).eval()
    assert ours.cfg.qk_norm == (family == "qwen3")
    assert ours.cfg.nope_every == (2 if family == "smollm3" else 0)
    assert ours.cfg.rope_theta == 777.0
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, stock(x, use_cache=False).logits, **TOL)


def test_import_refuses_unsupported_features(tmp_path):
    config = transformers.LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
        num_attention_heads=4, attention_bias=True,
    )  # fmt: skip
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(BadInput, match="attention_bias"):
        load_gpt(tmp_path)
    with pytest.raises(BadInput, match="not a model directory"):
        load_gpt(tmp_path / "missing")
    (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_size": 32}')
    with pytest.raises(BadInput, match="lacks.*vocab_size"):
        load_gpt(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama",\n "hidden_size": }')
    with pytest.raises(BadInput, match="config.json:2: invalid JSON"):
        load_gpt(tmp_path)
    (tmp_path / "llmforge_model.json").write_text('{"n_heads": 3}')
    with pytest.raises(BadInput, match="llmforge_model.json.*d_model"):
        load_gpt(tmp_path)


def test_export_copies_tokenizer_and_special_ids(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, "<|im_end|>": 1, **{f"w{i}": i + 2 for i in range(95)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    tok_dir = tmp_path / "tok"
    fast.save_pretrained(tok_dir)
    (tok_dir / "manifest.json").write_text("{}")
    out = tmp_path / "model"
    export_hf(random_model(), out, tokenizer_dir=tok_dir)
    assert (out / "tokenizer.json").is_file() and not (out / "manifest.json").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["eos_token_id"] == 0 and config["pad_token_id"] == 0
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [0, 1]  # <|endoftext|> and <|im_end|>
    loaded = transformers.AutoTokenizer.from_pretrained(out)
    assert loaded("w3 w4")["input_ids"] == [5, 6]


def test_custom_family_accumulation_matches_a_double_batch(tmp_path):
    """Issue 15, fault 5: Trainer hands `num_items_in_batch` to a forward that takes
    **kwargs and then skips its own 1/grad_accum, so a forward that ignored it trained with
    gradients grad_accum times too large. Two micro-batches of 2 must give the gradient of
    one batch of 4, with label counts that differ per row (no clipping)."""
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    export_hf(random_model(**FAMILIES["llmforge"]), tmp_path / "model")
    tokens = ids(4, 12)
    labels = tokens.clone()
    for row in range(4):
        labels[row, : 2 * row + 1] = -100  # 11, 9, 7 and 5 targets
    data = Dataset.from_dict({"input_ids": tokens.tolist(), "labels": labels.tolist()})

    class Grads(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            self.grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]

    def gradients(batch_size: int, grad_accum: int) -> list[torch.Tensor]:
        args = TrainingArguments(
            output_dir=str(tmp_path / f"run{grad_accum}"), per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=grad_accum, max_steps=1, max_grad_norm=0.0,
            use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True, seed=0,
        )  # fmt: skip
        grads = Grads()
        model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
        Trainer(model=model, args=args, train_dataset=data, callbacks=[grads]).train()
        return grads.grads

    whole, accumulated = gradients(4, 1), gradients(2, 2)
    assert len(whole) == len(accumulated) > 0
    for a, b in zip(whole, accumulated, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)


def test_custom_family_trains_under_trl_sft(tmp_path, tiny_tokenizer_dir):
    """TRL's SFTTrainer scores through `base_model` and the output embeddings itself (its
    fused LM head); the custom family used to crash there (GPT took no attention_mask)."""
    from transformers import AutoTokenizer

    from llmforge.post import sft
    from llmforge.post.trl_bridge import LoraArgs, TrainArgs, load_model
    from tests.post.test_sft import rows

    vocab = len(AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir)))
    tight_cap = {"vocab_size": vocab, "logit_softcap": 0.2}  # the cap visibly bends the logits
    export_hf(random_model(**{**FAMILIES["llmforge"], **tight_cap}), tmp_path / "model",
              tiny_tokenizer_dir)  # fmt: skip
    model, tok = load_model(tmp_path / "model")
    train = TrainArgs(batch_size=2, max_length=256, max_steps=1, save_steps=100)
    trainer = sft.build_trainer(model, tok, rows(4), [], train, sft.SFTOptions(), LoraArgs(),
                                tmp_path / "work")  # fmt: skip
    batch = dict(next(iter(trainer.get_train_dataloader())))
    assert "position_ids" in batch  # packed: documents restart their positions
    with torch.no_grad():
        trl_loss = float(trainer.compute_loss(trainer.model, batch))
        own_loss = float(trainer.model(**batch).loss)  # soft-capped logits, shifted labels
    assert trl_loss == pytest.approx(own_loss, rel=1e-5)
    assert trainer.train().global_step == 1
