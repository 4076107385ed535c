"""Loading any causal LM transformers knows, safely: sft, dpo, rlvr and eval go through here.

Before anything runs, `check_config` reads config.json alone and refuses, with the reason:
a model whose code ships in its own directory (`auto_map`) unless the user opted in with
`model.trust_remote_code=true` (transformers would otherwise ask on a terminal, or run it
when told to); a `model_type` this transformers does not know; an architecture with no
causal-LM head. `load` then refuses weights that do not fit the config: transformers only
logs missing tensors and initialises them at random, which would train a broken model.

Kept free of torch and transformers at import time, so configs and `--help` stay light.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmforge.config import param
from llmforge.errors import BadInput


@dataclass(frozen=True)
class ModelArgs:
    """How the input model is loaded."""

    trust_remote_code: bool = param(
        False,
        "run the Python code a checkpoint ships (config.json auto_map); only for code you "
        "have read: it runs with your permissions",
    )


def read_config(path: Path) -> dict:
    """config.json of a model directory; BadInput naming the file and line otherwise."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise BadInput("not a model: no config.json", path=str(path))
    return read_json_object(file)


def read_json_object(file: Path) -> dict:
    """A JSON file holding one object; BadInput naming the file and line otherwise."""
    try:
        data = json.loads(Path(file).read_text(encoding="utf-8-sig"))  # a BOM is dropped
    except json.JSONDecodeError as e:
        raise BadInput(f"invalid JSON: {e.msg}", path=str(file), line=e.lineno) from None
    except UnicodeDecodeError as e:
        raise BadInput(f"not UTF-8 (byte {e.start})", path=str(file)) from None
    if not isinstance(data, dict):
        raise BadInput("expected a JSON object", path=str(file))
    return data


def check_config(path: Path, trust_remote_code: bool = False) -> dict:
    """The model's config.json, once it is known to load as a causal LM under our policy."""
    from transformers import __version__
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    _register_ours()
    config = read_config(path)
    where = str(Path(path) / "config.json")
    model_type = config.get("model_type")
    remote = (config.get("auto_map") or {}).get("AutoModelForCausalLM")
    known = model_type in CONFIG_MAPPING_NAMES or model_type == "llmforge"
    if remote and not known and not trust_remote_code:
        raise BadInput(
            f"model_type {model_type!r} needs remote code: config.json maps "
            f"AutoModelForCausalLM to {remote!r}, Python shipped in the model directory. "
            "llmforge runs no checkpoint code unless you opt in with "
            "--set model.trust_remote_code=true (read that code first)",
            path=where,
        )
    if not known and not remote:
        raise BadInput(f"model_type {model_type!r} is unknown to transformers {__version__}",
                       path=where)  # fmt: skip
    if known and model_type != "llmforge" and model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise BadInput(f"model_type {model_type!r} has no causal-LM class in transformers "
                       "(sft, dpo, rlvr and eval train and sample decoder LMs)",
                       path=where)  # fmt: skip
    return config


def load(path: Path, trust_remote_code: bool = False, **kwargs: Any):
    """(model, tokenizer) of a model directory, checked by `check_config`, with every weight
    of the architecture present in the checkpoint and of the right shape."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_config(path, trust_remote_code)
    try:
        # Mismatched shapes come back in the loading info, so the message can name them.
        model, info = AutoModelForCausalLM.from_pretrained(
            str(path), trust_remote_code=trust_remote_code, output_loading_info=True,
            ignore_mismatched_sizes=True, **kwargs,
        )  # fmt: skip
    except (RuntimeError, ValueError, OSError) as e:
        raise BadInput(f"cannot load the model: {_first_line(e)}", path=str(path)) from None
    _check_loading(info, path)
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    return model, tokenizer


def _check_loading(info: dict, path: Path) -> None:
    missing = sorted(info.get("missing_keys") or [])
    mismatched = sorted(
        f"{key} (checkpoint {list(saved)}, config {list(wanted)})"
        for key, saved, wanted in info.get("mismatched_keys") or []
    )
    if missing or mismatched:
        parts = [f"{len(missing)} missing, e.g. {missing[:3]}"] if missing else []
        parts += (
            [f"{len(mismatched)} of the wrong shape, e.g. {mismatched[:2]}"] if mismatched else []
        )
        raise BadInput(f"weights do not match config.json: {'; '.join(parts)}", path=str(path))


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _register_ours() -> None:
    """Make llmforge's own custom family loadable without remote code."""
    import llmforge.model.hf  # noqa: F401
