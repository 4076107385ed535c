"""Outside inputs: what kind a plain file or directory is, told from its files alone.

A stage role that takes a `model`, a `tokenizer` or raw data (`raw`) also takes a path
llmforge did not write: a transformers model directory, a tokenizer directory or
`tokenizer.json`, a `datasets` directory saved with `save_to_disk`, or jsonl/parquet
files. `detect` checks the path against the kinds a role allows, in the role's order, and
says why it fits none ("not a model: no config.json"). Only files are read; no model code
runs here. The id of an outside input is the content hash of `llmforge.filehash`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llmforge.errors import BadInput

OUTSIDE_KINDS = ("model", "tokenizer", "raw")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
DATA_SUFFIXES = {
    ".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".json.gz": "jsonl", ".ndjson": "jsonl",
    ".json": "json", ".parquet": "parquet", ".txt": "text", ".md": "text",
    ".yaml": "yaml", ".yml": "yaml",
}  # fmt: skip


@dataclass(frozen=True)
class Detected:
    """What an outside path is: its kind (model, tokenizer or raw) and a readable detail."""

    kind: str
    detail: str


def detect(path: Path, kinds: tuple[str, ...]) -> Detected:
    """The first of `kinds` that `path` fits; BadInput listing why it fits none."""
    path = Path(path)
    if not path.exists():
        raise BadInput("no such file or directory", path=str(path))
    reasons = []
    for kind in (k for k in kinds if k in OUTSIDE_KINDS):
        found, reason = _CHECKS[kind](path)
        if found is not None:
            return Detected(kind, found)
        reasons.append(f"not a {'data file' if kind == 'raw' else kind}: {reason}")
    if not reasons:
        want = " or ".join(kinds)
        raise BadInput(f"not an artifact: no manifest.json (expected a {want} artifact)",
                       path=str(path))  # fmt: skip
    raise BadInput("; ".join(reasons), path=str(path))


def _model(path: Path) -> tuple[str | None, str]:
    if not path.is_dir():
        return None, "a model is a directory (config.json, weights, tokenizer)"
    config = path / "config.json"
    if not config.is_file():
        return None, "no config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        return None, f"config.json is not valid JSON ({e})"
    if not isinstance(data, dict) or not data.get("model_type"):
        return None, "config.json has no model_type"
    if not any(f.name.endswith(WEIGHT_SUFFIXES) for f in path.iterdir() if f.is_file()):
        return None, "no weights (*.safetensors) beside config.json"
    tok, reason = _tokenizer(path)
    if tok is None:
        return None, f"no tokenizer beside the weights ({reason})"
    arch = ",".join(data.get("architectures") or []) or data["model_type"]
    return f"transformers model ({arch})", ""


def _tokenizer(path: Path) -> tuple[str | None, str]:
    if path.is_file():
        if path.name.endswith(".json") and _is_tokenizers_json(path):
            return "tokenizer.json", ""
        return None, "a tokenizer file is a tokenizers tokenizer.json"
    found = [name for name in TOKENIZER_FILES if (path / name).is_file()]
    if not found:
        return None, f"no {' / '.join(TOKENIZER_FILES[:2])}"
    return f"tokenizer ({found[0]})", ""


def _is_tokenizers_json(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return False
    return isinstance(data, dict) and "model" in data and "added_tokens" in data


def _raw(path: Path) -> tuple[str | None, str]:
    if path.is_file():
        name = path.name.lower()
        kind = next((v for s, v in DATA_SUFFIXES.items() if name.endswith(s)), "file")
        return kind, ""
    if (path / "dataset_info.json").is_file() and (path / "state.json").is_file():
        return "datasets save_to_disk", ""
    if (path / "dataset_dict.json").is_file():
        return "datasets save_to_disk (DatasetDict)", ""
    n = sum(1 for f in path.rglob("*") if f.is_file())
    if n == 0:
        return None, "the directory is empty"
    return f"directory of {n} files", ""


_CHECKS = {"model": _model, "tokenizer": _tokenizer, "raw": _raw}
