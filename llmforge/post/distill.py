"""On-policy distillation (Qwen3, Thinking Machines) on TRL's `DistillationTrainer`.

The student samples a completion for each prompt, the teacher scores every token of it,
and the loss is the per-token reverse KL, KL(student || teacher) summed over the
vocabulary at each sampled position (TRL's generalized JSD with `beta=1`; `beta=0` is the
forward KL, values between interpolate). TRL 1.16 ships this as the stable
`DistillationTrainer` (its `GKDTrainer` with `lmbda=1` is the same run and warns that it
is superseded), so llmforge only maps its configs onto it, as `trl_bridge` does for SFT.

Added around it: the vocabulary check (the full-vocabulary KL needs one tokenizer; TRL's
GOLD distils across tokenizers and is not wrapped here), chat prompts taken from the sft
stage's sources, and our own held-out measure, independent of TRL's logging: the mean
per-token reverse KL to the teacher on completions the student samples for held-out
prompts, before and after training.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmforge.config import check, param
from llmforge.errors import BadInput
from llmforge.post.trl_bridge import LoraArgs, TrainArgs, common_args, peft_config, quiet_printer


@dataclass(frozen=True)
class DistillOptions:
    """On-policy distillation knobs; used when the sft stage gets a `teacher=` input."""

    beta: float = param(1.0, "divergence: 1 = reverse KL (on-policy distillation), 0 = forward KL")
    max_new_tokens: int = param(256, "longest completion the student samples per prompt")
    temperature: float = param(1.0, "sampling temperature, also applied to both models' logits")
    think: bool | None = param(
        None, "render prompts in think (true) or no_think (false) mode; null: the template's"
    )
    heldout_prompts: int = param(32, "held-out prompts for the before/after reverse KL (0: skip)")

    def __post_init__(self):
        check(0 <= self.beta <= 1, "beta", "must be in [0, 1]")
        check(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        check(self.temperature > 0, "temperature", "must be > 0 (the student must sample)")
        check(self.heldout_prompts >= 0, "heldout_prompts", "must be >= 0")

    def template_kwargs(self) -> dict:
        return {} if self.think is None else {"enable_thinking": self.think}


def check_vocab(student, teacher, teacher_path: str | Path) -> None:
    """The full-vocabulary KL compares logits index by index: the vocabularies must match."""
    s = student.config.get_text_config().vocab_size
    t = teacher.config.get_text_config().vocab_size
    if s != t:
        raise BadInput(
            f"the teacher's vocabulary ({t} tokens) differs from the student's ({s}); on-policy "
            "distillation here needs a teacher with the student's tokenizer",
            path=str(teacher_path),
        )


def distill_args(train: TrainArgs, opts: DistillOptions, output_dir: Path):
    """Our config mapped onto TRL's DistillationConfig."""
    from trl import DistillationConfig

    return DistillationConfig(
        **{**common_args(train, output_dir), "remove_unused_columns": False},
        max_completion_length=opts.max_new_tokens,
        temperature=opts.temperature,
        beta=opts.beta,
        chat_template_kwargs=opts.template_kwargs(),
        shuffle_dataset=False,  # the sft stream is already mixed and shuffled per epoch
    )


def build_trainer(model, teacher, tokenizer, prompts: Sequence, train: TrainArgs,
                  opts: DistillOptions, lora: LoraArgs, work: Path, callbacks=()):  # fmt: skip
    """A DistillationTrainer over chat `prompts` (message lists ending with a user turn)."""
    from datasets import Dataset
    from trl import DistillationTrainer

    left = copy.deepcopy(tokenizer)  # TRL wants left padding; the published tokenizer keeps its own
    left.padding_side = "left"
    trainer = DistillationTrainer(
        model=model,
        teacher_model=teacher,
        args=distill_args(train, opts, work),
        train_dataset=Dataset.from_list([{"prompt": list(p)} for p in prompts]),
        processing_class=left,
        peft_config=peft_config(lora),
        callbacks=list(callbacks),
    )
    quiet_printer(trainer)
    return trainer


def stop_at_turn_end(model, tokenizer) -> list | int | None:
    """Make generation stop at the chat turn's end token too; returns the old setting."""
    from llmforge.gen import stop_token_ids

    old = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = stop_token_ids(tokenizer)
    return old


# ---------------------------------------------------------------- held-out reverse KL


def reverse_kl(student, teacher, tokenizer, prompts: Sequence, max_new_tokens: int = 128,
               seed: int = 0, template_kwargs: dict | None = None, batch_size: int = 16) -> dict:  # fmt: skip
    """Mean per-token KL(student || teacher) on completions the student samples.

    `reverse_kl` sums over the full vocabulary at each sampled position (what the loss
    minimises); `sampled_log_ratio` is the one-sample estimate log p_s - log p_t of the
    sampled tokens, whose mean estimates the same quantity without the vocabulary sum.
    """
    import torch

    from llmforge.gen import TransformersGenerator

    if not prompts:
        return {}
    gen = TransformersGenerator(student, tokenizer, batch_size, template_kwargs)
    samples = [g[0] for g in gen.generate(list(prompts), n=1, temperature=1.0,
                                          max_new_tokens=max_new_tokens, seed=seed)]  # fmt: skip
    totals = torch.zeros(2, dtype=torch.float64)
    tokens = 0
    for start in range(0, len(samples), batch_size):
        kl, ratio, n = _batch_kl(student, teacher, samples[start : start + batch_size], gen.pad_id)
        totals += torch.tensor([kl, ratio], dtype=torch.float64)
        tokens += n
    return {
        "reverse_kl": float(totals[0] / max(tokens, 1)),
        "sampled_log_ratio": float(totals[1] / max(tokens, 1)),
        "tokens": tokens,
        "prompts": len(samples),
    }


def _batch_kl(student, teacher, samples, pad_id: int) -> tuple[float, float, int]:
    """Summed full-vocabulary KL, summed sampled log-ratio and token count of a batch."""
    import torch

    from llmforge.post.sequences import completion_slices, right_pad

    ids, mask = right_pad(samples, pad_id)
    with torch.no_grad():
        logp_s = _logprobs(student, ids, mask)
        logp_t = _logprobs(teacher, ids, mask)
    kl = ratio = 0.0
    for row, (s, at) in enumerate(zip(samples, completion_slices(samples), strict=True)):
        ls, lt = logp_s[row, at], logp_t[row, at]
        kl += float((ls.exp() * (ls - lt)).sum())
        picked = torch.tensor(s.token_ids)[:, None]
        ratio += float((ls.gather(-1, picked) - lt.gather(-1, picked)).sum())
    return kl, ratio, sum(len(s.token_ids) for s in samples)


def _logprobs(model, ids, mask):
    import torch

    was_training = model.training
    model.eval()
    try:
        out = model(
            input_ids=ids.to(model.device), attention_mask=mask.to(model.device), use_cache=False
        )
        logits = out.logits.float().cpu()
    finally:
        model.train(was_training)
    return torch.log_softmax(logits, dim=-1)
