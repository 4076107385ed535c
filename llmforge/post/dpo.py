"""Preference optimisation on TRL: DPO (sigmoid), IPO, APO-zero/down, KTO and ORPO.

Paired rows `{prompt, chosen, rejected}` train DPO-family losses with a reference model
(the input model unless another is given) or ORPO without one; KTO takes unpaired
`{prompt, completion, label}` rows (paired rows are split into one good, one bad). Our
own held-out measure, independent of TRL's reward bookkeeping, is the policy's summed
log-probability of chosen vs rejected completions: accuracy (share of pairs where chosen
wins) and mean margin, before and after training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llmforge.config import check, param
from llmforge.distributed import model_device
from llmforge.post.trl_bridge import LoraArgs, TrainArgs, common_args, peft_config, quiet_printer

LOSSES = ("sigmoid", "ipo", "apo_zero", "apo_down", "kto", "orpo")


@dataclass(frozen=True)
class DPOOptions:
    """The preference-specific knobs."""

    loss: Literal["sigmoid", "ipo", "apo_zero", "apo_down", "kto", "orpo"] = param(
        "apo_zero",
        "sigmoid = DPO; ipo; apo_zero/apo_down (anchored); kto (unpaired); orpo "
        "(no reference model)",
    )
    beta: float = param(0.1, "strength of the KL anchor to the reference (ORPO: odds weight)")
    sft_weight: float = param(
        0.0, "add the chosen answers' NLL with this weight (RPO, Pang et al. 2024): keeps "
        "chosen likely, which plain DPO on near-identical pairs does not",
    )  # fmt: skip
    think: bool = param(False, "render prompts in think mode (default: no_think)")
    heldout_fraction: float = param(0.1, "share of pairs held out for before/after metrics")
    heldout_max: int = param(200, "at most this many held-out pairs")

    def __post_init__(self):
        check(self.beta > 0, "beta", "must be > 0")
        check(self.sft_weight >= 0, "sft_weight", "must be >= 0")
        check(0 <= self.heldout_fraction < 1, "heldout_fraction", "must be in [0, 1)")
        check(self.heldout_max >= 0, "heldout_max", "must be >= 0")


def as_messages(prompt: str | Sequence[Mapping]) -> list[dict]:
    """A prompt as a message list (a bare string is one user turn)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m.get("content") or ""} for m in prompt]


def paired_rows(rows: list[dict], think: bool) -> list[dict]:
    """TRL conversational preference rows."""
    kwargs = {"enable_thinking": think}
    return [
        {
            "prompt": as_messages(r["prompt"]),
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
            "chat_template_kwargs": kwargs,
        }
        for r in rows
    ]


def unpaired_rows(rows: list[dict], think: bool) -> list[dict]:
    """TRL conversational KTO rows; a paired row becomes one desirable and one undesirable."""
    out = []
    kwargs = {"enable_thinking": think}
    for r in rows:
        prompt = as_messages(r["prompt"])
        items = (
            [(r["completion"], r["label"])]
            if "label" in r
            else [(r["chosen"], True), (r["rejected"], False)]
        )
        for text, label in items:
            out.append(
                {
                    "prompt": prompt,
                    "completion": [{"role": "assistant", "content": text}],
                    "label": bool(label),
                    "chat_template_kwargs": kwargs,
                }
            )
    return out


def _dataset(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_list(rows)


def trainer_for(
    model,
    ref_model,
    tokenizer,
    train_rows,
    opts: DPOOptions,
    train: TrainArgs,
    lora: LoraArgs,
    work: Path,
    callbacks=(),
):
    """The TRL trainer for `opts.loss` over our preference rows."""
    base = {**common_args(train, work), "max_length": train.max_length}
    peft = peft_config(lora)
    if opts.loss == "kto":
        from trl import KTOConfig, KTOTrainer

        args = KTOConfig(**base, beta=opts.beta)
        data = _dataset(unpaired_rows(train_rows, opts.think))
        trainer = KTOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=peft,
            callbacks=list(callbacks),
        )
    elif opts.loss == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        args = ORPOConfig(**base, beta=opts.beta)
        data = _dataset(paired_rows(train_rows, opts.think))
        trainer = ORPOTrainer(
            model=model,
            args=args,
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=peft,
            callbacks=list(callbacks),
        )
    else:
        from trl import DPOConfig, DPOTrainer

        losses = {opts.loss: 1.0} | ({"sft": opts.sft_weight} if opts.sft_weight else {})
        args = DPOConfig(**base, beta=opts.beta, loss_type=list(losses),
                         loss_weights=list(losses.values()))  # fmt: skip
        data = _dataset(paired_rows(train_rows, opts.think))
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=peft,
            callbacks=list(callbacks),
        )
    quiet_printer(trainer)
    return trainer


# ---------------------------------------------------------------- held-out preference metrics


def completion_logp(model, tokenizer, prompt, completion: str, think: bool) -> float:
    """Summed log-probability of an assistant completion (with its end token) after `prompt`."""
    import torch

    messages = as_messages(prompt)
    head = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, enable_thinking=think
    )
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": completion}],
        tokenize=False,
        enable_thinking=think,
    ).rstrip("\n")
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if ids[: len(head_ids)] != head_ids:  # the template must extend the prompt verbatim
        raise ValueError("chat template does not extend the generation prompt")
    x = torch.tensor([ids])
    with torch.no_grad():  # the inputs go where the model is (the Trainer moves it to a GPU)
        logits = model(input_ids=x.to(model_device(model)), use_cache=False).logits[0, :-1]
    targets = x[0, 1:, None].to(logits.device)
    logps = torch.log_softmax(logits.float(), -1).gather(-1, targets)[:, 0]
    return float(logps[len(head_ids) - 1 :].sum())


def preference_metrics(model, tokenizer, rows: list[dict], think: bool = False) -> dict:
    """Accuracy and mean margin of chosen over rejected log-probs, plus their means."""
    if not rows:
        return {}
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    for r in rows:
        chosen.append(completion_logp(model, tokenizer, r["prompt"], r["chosen"], think))
        rejected.append(completion_logp(model, tokenizer, r["prompt"], r["rejected"], think))
    model.train(was_training)
    margins = [c - x for c, x in zip(chosen, rejected)]
    n = len(rows)
    return {
        "accuracy": sum(m > 0 for m in margins) / n,
        "margin": sum(margins) / n,
        "logp_chosen": sum(chosen) / n,
        "logp_rejected": sum(rejected) / n,
        "pairs": n,
    }
