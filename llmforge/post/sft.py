"""Supervised fine-tuning on TRL's SFTTrainer, with what TRL lacks added around it.

TRL does BFD packing with per-sample position ids, the labels from our assistant masks,
PEFT and checkpoints. Around it llmforge adds: the tokenization and assistant masks
(`chat_data.tokenize_chat`, with or without {% generation %} markers), per-epoch source mixtures (the stream is built up front, so the
trainer reads it in order), the think budget, our fused linear cross-entropy as an opt-in
loss, held-out loss before and after, and a think/no_think format-compliance check.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llmforge.config import check, param
from llmforge.post import chat_data
from llmforge.post.trl_bridge import LoraArgs, TrainArgs, common_args, peft_config, quiet_printer


@dataclass(frozen=True)
class SFTOptions:
    """The SFT-specific knobs (everything else sits in TrainArgs and LoraArgs)."""

    loss_on: Literal["assistant", "all"] = param(
        "assistant", "train on assistant tokens only, or on every token (user turns too)"
    )
    fused_loss: bool = param(
        False,
        "use llmforge.ops.linear_cross_entropy on the last hidden "
        "states instead of TRL's loss (never builds full logits)",
    )
    packing: bool = param(True, "BFD packing, padding-free, position ids restart per sample")
    packing_strategy: Literal["bfd", "bfd_split", "wrapped"] = param("bfd", "TRL packing strategy")
    think_budget: int | None = param(None, "cut reasoning traces to this many tokens (Hermes 4)")
    heldout_fraction: float = param(0.05, "share of each source held out to measure loss")
    heldout_max: int = param(200, "at most this many held-out rows per source")

    def __post_init__(self):
        check(self.think_budget is None or self.think_budget >= 1, "think_budget", "must be >= 1")
        check(0 <= self.heldout_fraction < 1, "heldout_fraction", "must be in [0, 1)")
        check(self.heldout_max >= 0, "heldout_max", "must be >= 0")


def split_heldout(rows: list[dict], fraction: float, max_rows: int, seed: int):
    """(train, heldout): a seeded random share of rows is held out (at least one if any)."""
    if fraction <= 0 or max_rows == 0 or len(rows) < 2:
        return rows, []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n = min(max_rows, max(1, round(fraction * len(rows))))
    held = set(order[:n])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


def budget_rows(rows: list[dict], tokenizer, budget: int | None) -> tuple[list[dict], int]:
    """Rows with the think budget applied, and how many traces it cut."""
    if budget is None:
        return rows, 0
    out, cut = [], 0
    for row in rows:
        row, was_cut = chat_data.apply_think_budget(row, tokenizer, budget)
        out.append(row)
        cut += was_cut
    return out, cut


def trl_dataset(rows: list[dict], tokenizer, loss_on: str):
    """A pre-tokenized dataset: TRL then only builds labels from `assistant_masks`, packs
    and truncates (see chat_data.tokenize_chat for why we tokenize ourselves)."""
    from datasets import Dataset

    return Dataset.from_list([chat_data.tokenize_chat(r, tokenizer, loss_on) for r in rows])


def sft_args(train: TrainArgs, opts: SFTOptions, output_dir: Path):
    """Our config mapped onto TRL's SFTConfig."""
    from trl import SFTConfig

    return SFTConfig(
        **common_args(train, output_dir),
        max_length=train.max_length,
        packing=opts.packing,
        packing_strategy=opts.packing_strategy,
        eval_packing=False,
        # The loss mask arrives as our own `assistant_masks` column (chat_data.tokenize_chat).
        assistant_only_loss=False,
        # The stream is already shuffled per epoch; reading it in order keeps the phases.
        shuffle_dataset=False,
        train_sampling_strategy="sequential",
        dataset_num_proc=None,
    )


def _trainer_class():
    from trl import SFTTrainer

    class LLMForgeSFTTrainer(SFTTrainer):
        """SFTTrainer whose loss can be our chunked fused linear cross-entropy."""

        fused_loss = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not self.fused_loss:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss = fused_causal_lm_loss(model, inputs, num_items_in_batch)
            return (loss, {"loss": loss}) if return_outputs else loss

    return LLMForgeSFTTrainer


def fused_causal_lm_loss(model, inputs: Mapping, num_items_in_batch=None):
    """Next-token loss from the decoder's last hidden states and the lm_head weight.

    The logits are never materialised whole: `linear_cross_entropy` works in chunks. A
    config's `final_logit_softcapping` caps them as the model's own forward does.
    """
    import torch.nn.functional as F

    from llmforge.ops import linear_cross_entropy

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base = getattr(base, "module", base)
    labels = inputs["labels"]
    feed = {k: v for k, v in inputs.items() if k not in ("labels", "use_cache")}
    hidden = base.get_decoder()(**feed, use_cache=False).last_hidden_state
    targets = F.pad(labels[:, 1:], (0, 1), value=-100)
    softcap = getattr(base.config, "final_logit_softcapping", None)  # Gemma 2, our custom family
    out = linear_cross_entropy(
        hidden, base.get_output_embeddings().weight, targets, softcap=softcap, reduction="sum"
    )
    count = num_items_in_batch if num_items_in_batch is not None else (targets != -100).sum()
    return out.loss / max(int(count), 1)


def build_trainer(
    model,
    tokenizer,
    train_rows,
    eval_rows,
    train: TrainArgs,
    opts: SFTOptions,
    lora: LoraArgs,
    work: Path,
    callbacks=(),
):
    """An SFT trainer over already-mixed `train_rows` (and `eval_rows` for held-out loss)."""
    cls = _trainer_class()
    trainer = cls(
        model=model,
        args=sft_args(train, opts, work),
        train_dataset=trl_dataset(train_rows, tokenizer, opts.loss_on),
        eval_dataset=trl_dataset(eval_rows, tokenizer, opts.loss_on) if eval_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config(lora),
        callbacks=list(callbacks),
    )
    trainer.fused_loss = opts.fused_loss
    quiet_printer(trainer)
    return trainer


def total_steps(trainer, train: TrainArgs) -> int:
    """Optimizer steps the run will take."""
    if train.max_steps > 0:
        return train.max_steps
    batches = math.ceil(len(trainer.train_dataset) / train.batch_size)
    return max(1, math.ceil(batches / train.grad_accum))


# ---------------------------------------------------------------- format compliance

_THINK = re.compile(r"^<think>\n(?P<reasoning>.*?\S.*?)\n</think>\n(?P<answer>.*\S.*)$", re.S)


def think_shape_ok(text: str, mode: str) -> bool:
    """Does a completion have the right shape for its mode?

    think: a non-empty `<think>` block, then an answer. no_think: the empty block is in the
    prompt already, so the completion is a plain answer with no think tags. Both must give
    a final `\\boxed{}` answer.
    """
    if "\\boxed{" not in text:
        return False
    if mode == "think":
        match = _THINK.match(text)
        return bool(match) and "<think>" not in match["answer"]
    return "<think>" not in text and "</think>" not in text and bool(text.strip())


def format_compliance(model, tokenizer, prompts: list, max_new_tokens: int = 96) -> dict:
    """Share of greedy completions with the right think/no_think shape, per mode.

    `prompts` are message lists ending with a user turn.
    """
    from llmforge.gen import TransformersGenerator

    scores = {}
    for mode in chat_data.MODES:
        gen = TransformersGenerator(
            model, tokenizer, batch_size=16, template_kwargs={"enable_thinking": mode == "think"}
        )
        completions = gen.generate(prompts, n=1, temperature=0.0, max_new_tokens=max_new_tokens)
        ok = [think_shape_ok(c[0].text, mode) for c in completions]
        scores[mode] = sum(ok) / max(len(ok), 1)
    return scores


def prompts_of(rows: list[dict], limit: int) -> list[list[dict]]:
    """The conversation up to the last user turn, for the first `limit` rows; system flags
    are stripped so the mode comes from `enable_thinking` alone."""
    prompts = []
    chats = [r for r in rows if any(m["role"] == "user" for m in r.get("messages", []))]
    for row in chats[:limit]:
        messages = row["messages"]
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        kept = []
        for m in messages[: last_user + 1]:
            content = m.get("content") or ""
            if m["role"] == "system":
                content = re.sub(r"\s*/(no_)?think\s*$", "", content)
            kept.append({"role": m["role"], "content": content})
        prompts.append(kept)
    return prompts
