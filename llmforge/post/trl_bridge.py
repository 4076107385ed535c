"""The bridge between llmforge's frozen configs and TRL/PEFT/transformers.

Stages never pass TRL's argument classes around: they hold our `TrainArgs` and `LoraArgs`
sections, and this module maps them onto `SFTConfig`/`DPOConfig`/`KTOConfig` fields (TRL
1.16 names), builds the PEFT adapter, loads and publishes `model` artifacts, finds the
checkpoint to resume from, and forwards TRL's logs to `metrics.jsonl`, the optional
trackers (W&B, TensorBoard) and a progress bar.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llmforge import causal_lm, log
from llmforge.causal_lm import ModelArgs
from llmforge.config import check, param
from llmforge.errors import BadInput
from llmforge.train import tracking

MODEL_JSON = "llmforge_model.json"


@dataclass(frozen=True)
class TrainArgs:
    """Optimisation and loop settings shared by sft and dpo."""

    lr: float = param(1e-5, "peak learning rate (full-scale SFT uses 3e-6..1e-5)")
    epochs: int = param(2, "passes over the (mixed) training data")
    max_steps: int = param(-1, "stop after this many optimizer steps (-1: run all epochs)")
    batch_size: int = param(8, "sequences (or packed bins) per device per micro-step")
    grad_accum: int = param(1, "micro-steps per optimizer step")
    max_length: int = param(2048, "longest sequence in tokens (the bin size when packing)")
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = param(
        "cosine", "LR schedule after warmup"
    )
    warmup_ratio: float = param(0.03, "share of the steps spent warming the LR up")
    weight_decay: float = param(0.0, "AdamW weight decay")
    max_grad_norm: float = param(1.0, "gradient clipping norm")
    seed: int = param(0, "seed of the data order, the mixture and the init of adapters")
    save_steps: int = param(200, "save a resumable checkpoint every N optimizer steps")
    logging_steps: int = param(10, "log metrics every N optimizer steps")
    bf16: bool = param(False, "bf16 mixed precision (GPU; the CPU default stays fp32)")
    gradient_checkpointing: bool = param(False, "recompute activations to save memory")

    def __post_init__(self):
        check(self.lr > 0, "lr", "must be > 0")
        check(self.epochs >= 1, "epochs", "must be >= 1")
        check(self.max_steps == -1 or self.max_steps >= 1, "max_steps", "must be -1 or >= 1")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.grad_accum >= 1, "grad_accum", "must be >= 1")
        check(self.max_length >= 8, "max_length", "must be >= 8")
        check(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check(self.save_steps >= 1, "save_steps", "must be >= 1")
        check(self.logging_steps >= 1, "logging_steps", "must be >= 1")


@dataclass(frozen=True)
class LoraArgs:
    """Full fine-tuning, or a LoRA/QLoRA adapter through PEFT."""

    mode: Literal["full", "lora", "qlora"] = param("full", "which weights train")
    r: int = param(16, "LoRA rank")
    alpha: int = param(32, "LoRA alpha (the update is scaled by alpha / r)")
    dropout: float = param(0.0, "dropout on the LoRA input")
    target_modules: tuple[str, ...] = param(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "module names that get adapters ('all-linear' also works)",
    )
    merge: bool = param(True, "merge the adapter into the published model (else publish both)")

    def __post_init__(self):
        check(self.r >= 1, "r", "must be >= 1")
        check(self.alpha >= 1, "alpha", "must be >= 1")
        check(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")


def common_args(train: TrainArgs, output_dir: Path) -> dict[str, Any]:
    """TrainingArguments fields every TRL trainer shares (CPU-safe defaults)."""
    import torch

    cuda = torch.cuda.is_available()
    return dict(
        output_dir=str(output_dir),
        learning_rate=train.lr,
        num_train_epochs=1,
        max_steps=train.max_steps,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum,
        lr_scheduler_type=train.scheduler,
        warmup_steps=train.warmup_ratio,
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        seed=train.seed,
        data_seed=train.seed,
        save_strategy="steps",
        save_steps=train.save_steps,
        save_total_limit=2,
        logging_steps=train.logging_steps,
        report_to="none",
        use_cpu=not cuda,
        bf16=train.bf16 and cuda,
        activation_checkpointing=train.gradient_checkpointing,
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=True,
    )


def peft_config(lora: LoraArgs):
    """The PEFT `LoraConfig` for lora/qlora, None for full fine-tuning."""
    if lora.mode == "full":
        return None
    from peft import LoraConfig

    targets = "all-linear" if lora.target_modules == ("all-linear",) else list(lora.target_modules)
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


def load_model(path: Path, lora: LoraArgs | None = None, model_args: ModelArgs | None = None):
    """(model, tokenizer) of any causal-LM directory (ours or not; see llmforge.causal_lm),
    given the think/no_think chat template when it has none. QLoRA loads 4-bit weights and
    needs CUDA."""
    import torch

    kwargs: dict[str, Any] = {}
    if lora is not None and lora.mode == "qlora":
        if not torch.cuda.is_available():
            raise BadInput(
                "lora.mode=qlora needs a CUDA GPU (4-bit bitsandbytes weights); "
                "use lora.mode=lora on CPU"
            )
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    trust = (model_args or ModelArgs()).trust_remote_code
    model, tokenizer = causal_lm.load(path, trust, **kwargs)
    added = ensure_chat_template(model, tokenizer)
    if added and lora is not None and lora.mode != "full":
        log.warn(f"an adapter leaves the embeddings of the added tokens {added} untrained; "
                 "lora.mode=full trains them")  # fmt: skip
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def ensure_chat_template(model, tokenizer) -> list[str]:
    """Keep the model's own chat template; only a tokenizer without one gets llmforge's
    think/no_think ChatML template, with the special tokens it needs added (new embedding
    rows start at the mean of the old ones, transformers' default) and <|im_end|> as a stop
    token. Returns the tokens added."""
    from llmforge.data.tokenizer import CHAT_TEMPLATE, DOC_SEP, SPECIAL_TOKENS

    if tokenizer.chat_template:
        return []
    vocab = tokenizer.get_vocab()
    added = [t for t in SPECIAL_TOKENS if t != DOC_SEP and t not in vocab]
    if added:
        tokenizer.add_tokens(added, special_tokens=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        stops = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        gen.eos_token_id = [t for t in dict.fromkeys([*stops, im_end]) if t is not None]
    log.info("the model has no chat template: added llmforge's think/no_think template"
             + (f" and tokens {added}" if added else ""))  # fmt: skip
    return added


def has_own_chat_template(model_dir: Path) -> bool:
    """Does a model directory's tokenizer ship a chat template (file or tokenizer_config)?"""
    model_dir = Path(model_dir)
    if any((model_dir / f).is_file() for f in ("chat_template.jinja", "chat_template.json")):
        return True
    config = model_dir / "tokenizer_config.json"
    try:
        return bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, ValueError):
        return False


def publish_model(model, tokenizer, source: Path, out_dir: Path, lora: LoraArgs) -> dict:
    """Save the trained model (adapter merged, or saved beside it) into `out_dir`."""
    from peft import PeftModel

    template = "own" if has_own_chat_template(source) else "added think/no_think"
    info = {"finetune": lora.mode, "architecture": type(_base(model)).__name__,
            "chat_template": template}  # fmt: skip
    if isinstance(model, PeftModel):
        if lora.merge and lora.mode == "lora":
            model = model.merge_and_unload()
            info["adapter"] = "merged"
        else:
            model.save_pretrained(str(out_dir / "adapter"), safe_serialization=True)
            model = model.get_base_model()
            info["adapter"] = "adapter/"
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    if (Path(source) / MODEL_JSON).is_file():
        shutil.copy2(Path(source) / MODEL_JSON, out_dir / MODEL_JSON)
    return info


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def resume_checkpoint(work: Path) -> str | None:
    """The newest complete TRL checkpoint under `work`, or None."""
    from transformers.trainer_utils import get_last_checkpoint

    if not Path(work).is_dir():
        return None
    return get_last_checkpoint(str(work))


def trainer_callback(out, total_steps: int | None, stage: str):
    """A transformers callback: each TRL log record to metrics.jsonl, the trackers that
    LLMFORGE_TRACK asks for (train/tracking.py, same names) and a progress bar."""
    from transformers import TrainerCallback

    class _Forward(TrainerCallback):
        def __init__(self):
            self.bar_cm = log.progress(stage, total=total_steps)
            self.bar = None
            self.tracker = None

        def on_train_begin(self, args, state, control, **kwargs):
            if out is not None:
                self.tracker = tracking.open_tracker(out)
            self.bar = self.bar_cm.__enter__()
            self.bar.advance(state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.advance(1)

        def on_log(self, args, state, control, logs=None, **kwargs):
            record = {"step": state.global_step, **{k: _num(v) for k, v in (logs or {}).items()}}
            if out is not None:
                out.log_metrics(record)
            if self.tracker is not None:
                self.tracker.log(record)
            if self.bar is not None and "loss" in record:
                self.bar.status(f"loss {record['loss']:.4f}")

        def on_train_end(self, args, state, control, **kwargs):
            if self.tracker is not None:
                self.tracker.close()
                self.tracker = None
            if self.bar is not None:
                self.bar_cm.__exit__(None, None, None)
                self.bar = None

    return _Forward()


def quiet_printer(trainer) -> None:
    """Drop transformers' stdout log printer: stdout carries only the artifact path."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def _num(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value
