"""SFT library pieces: the trainer's batches (assistant-only labels, packing with restarting
positions), packed == unpacked loss, the fused loss against TRL's, the format check and
the held-out split."""

import random

import pytest
import torch

from llmforge.post import sft
from llmforge.post.sft import SFTOptions
from llmforge.post.trl_bridge import LoraArgs, TrainArgs


def rows(n=12, seed=0):
    from llmforge.data.synth import chat, splits

    rng = random.Random(seed)
    return chat.sft_rows(splits.sample(rng, "train", n, 1), rng)


def trainer(tiny_model, tmp_path, packing, fused=False, loss_on="assistant"):
    from llmforge.post.trl_bridge import load_model

    model, tok = load_model(tiny_model)
    train = TrainArgs(batch_size=4, max_length=256, max_steps=1, save_steps=100)
    opts = SFTOptions(packing=packing, fused_loss=fused, loss_on=loss_on)
    return sft.build_trainer(model, tok, rows(), [], train, opts, LoraArgs(), tmp_path)


def batch_loss_sum(t, batch):
    """Summed next-token NLL of a collated batch (what a token-weighted mean is built from)."""
    t.model.eval()
    with torch.no_grad():
        feed = {k: v for k, v in batch.items() if k != "labels"}
        logits = t.model(**feed, use_cache=False).logits
    labels = batch["labels"][:, 1:]
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum"
    )
    return float(nll), int((labels != -100).sum())


def test_labels_cover_assistant_tokens_only(tiny_model, tmp_path):
    t = trainer(tiny_model, tmp_path, packing=False)
    batch = next(iter(t.get_train_dataloader()))
    tok = t.processing_class
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    trained = tok.decode(ids[labels != -100])
    assert "\\boxed{" in trained and "<|im_end|>" in trained
    assert "<|im_start|>user" not in trained and "<|im_start|>assistant" not in trained
    full = trainer(tiny_model, tmp_path / "all", packing=False, loss_on="all")
    batch_all = next(iter(full.get_train_dataloader()))
    assert (batch_all["labels"] != -100).sum() > (batch["labels"] != -100).sum()


def test_packed_batch_restarts_positions_and_matches_unpacked_loss(tiny_model, tmp_path):
    packed = trainer(tiny_model, tmp_path / "p", packing=True)
    batch = next(iter(packed.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    starts = (batch["position_ids"][0] == 0).nonzero().flatten()
    assert len(starts) > 4  # several samples share one row, each from position 0
    p_sum, p_count = batch_loss_sum(packed, batch)
    # The same samples one per row with padding: the summed loss must agree, so packed
    # samples do not attend to each other.
    bounds = starts.tolist() + [batch["input_ids"].shape[1]]
    spans = list(zip(bounds, bounds[1:]))
    width = max(b - a for a, b in spans)
    ids = torch.zeros(len(spans), width, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for i, (a, b) in enumerate(spans):
        ids[i, : b - a] = batch["input_ids"][0, a:b]
        labels[i, : b - a] = batch["labels"][0, a:b]
        mask[i, : b - a] = 1
    u_batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    u_sum, u_count = batch_loss_sum(packed, u_batch)
    assert p_count == u_count
    assert p_sum == pytest.approx(u_sum, rel=1e-4)


def test_fused_loss_equals_trl_loss(tiny_model, tmp_path):
    t = trainer(tiny_model, tmp_path, packing=False)
    batch = next(iter(t.get_train_dataloader()))
    t.model.eval()
    with torch.no_grad():
        trl_loss = float(t.compute_loss(t.model, dict(batch)))
        fused = float(sft.fused_causal_lm_loss(t.model, dict(batch)))
    assert fused == pytest.approx(trl_loss, rel=1e-4)
    packed = trainer(tiny_model, tmp_path / "p", packing=True, fused=True)
    pbatch = next(iter(packed.get_train_dataloader()))
    loss = packed.compute_loss(packed.model, dict(pbatch))
    loss.backward()  # the fused path trains: gradients reach the embeddings
    assert packed.model.get_input_embeddings().weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "text, mode, ok",
    [
        ("<think>\n2 + 2 = 4.\n</think>\nThe answer is \\boxed{4}.", "think", True),
        ("<think>\n\n</think>\nThe answer is \\boxed{4}.", "think", False),  # empty reasoning
        ("<think>\n2 + 2 = 4.\n</think>\nThe answer is 4.", "think", False),  # no box
        ("The answer is \\boxed{4}.", "no_think", True),
        ("<think>\nhm\n</think>\n\\boxed{4}", "no_think", False),
        ("The answer is \\boxed{4}.", "think", False),
    ],
)
def test_think_shape(text, mode, ok):
    assert sft.think_shape_ok(text, mode) is ok


def test_prompts_strip_flags_and_stop_at_last_user_turn():
    row = {
        "messages": [
            {"role": "system", "content": "Be brief. /no_think"},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d"},
        ]
    }
    (prompt,) = sft.prompts_of([row], 5)
    assert [m["content"] for m in prompt] == ["Be brief.", "a", "b", "c"]


def test_split_heldout_is_seeded_and_disjoint():
    data = [{"id": i} for i in range(50)]
    train, held = sft.split_heldout(data, 0.1, 100, seed=3)
    assert len(held) == 5 and len(train) == 45
    assert {r["id"] for r in train}.isdisjoint(r["id"] for r in held)
    assert sft.split_heldout(data, 0.1, 100, seed=3) == (train, held)
    assert sft.split_heldout(data, 0.1, 2, seed=3)[1].__len__() == 2


def test_fused_loss_applies_the_models_logit_softcap():
    """The custom family with a soft-cap: the fused loss is the model's own forward loss
    (before the fix it ignored `final_logit_softcapping` and scored uncapped logits)."""
    from llmforge.config import to_dict
    from llmforge.model.gpt import ModelConfig
    from llmforge.model.hf import LLMForgeConfig, LLMForgeForCausalLM

    cfg = ModelConfig(vocab_size=61, d_model=32, n_heads=4, ffn_hidden=48, logit_softcap=2.0)
    torch.manual_seed(0)
    model = LLMForgeForCausalLM(LLMForgeConfig(llmforge=to_dict(cfg))).eval()
    with torch.no_grad():  # logits well beyond the cap, so capping changes the loss
        model.get_output_embeddings().weight.mul_(50.0)
    ids = torch.randint(0, 61, (2, 12), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :3] = -100
    with torch.no_grad():
        own = model(input_ids=ids, labels=labels).loss
        fused = sft.fused_causal_lm_loss(model, {"input_ids": ids, "labels": labels})
        uncapped = torch.nn.functional.cross_entropy(
            model.get_output_embeddings()(model.get_decoder()(ids).last_hidden_state)[:, :-1]
            .reshape(-1, 61), labels[:, 1:].reshape(-1),
        )  # fmt: skip
    assert abs(float(own) - float(uncapped)) > 0.1  # the cap matters in this setting
    torch.testing.assert_close(fused, own, rtol=1e-5, atol=1e-6)
