"""Test stand-ins for the eval tests: a scripted generator and a model with a lineage."""

from __future__ import annotations

import shutil
from pathlib import Path

from llmforge import artifact
from llmforge.gen import Completion


class ScriptedGenerator:
    """A `Generator` that answers each prompt from a script: prompt text -> completions."""

    def __init__(self, script, template_kwargs=None):
        self.script = script
        self.template_kwargs = dict(template_kwargs or {})
        self.calls: list[dict] = []

    def generate(self, prompts, n=1, temperature=1.0, top_p=1.0, max_new_tokens=256, seed=0):
        self.calls.append(
            {
                "n": n,
                "temperature": temperature,
                "prompts": list(prompts),
                "template_kwargs": dict(self.template_kwargs),
            }
        )
        out = []
        for prompt in prompts:
            key = prompt if isinstance(prompt, str) else prompt[-1]["content"]
            texts = self.script(key, self.template_kwargs)
            texts = (texts * n)[:n] if isinstance(texts, list) else [texts] * n
            out.append([Completion(t, [1, 2], [-0.1, -0.2], "stop") for t in texts])
        return out


def publish_model_from(
    model_dir: Path, out: Path, inputs: list[Path], stage: str = "pretrain"
) -> Path:
    """Publish a copy of a model artifact whose manifest records `inputs` (for lineage)."""
    refs = [artifact.open_artifact(p, role=f"in{i}") for i, p in enumerate(inputs)]
    config = {"from": str(model_dir)}
    art_id = artifact.compute_id(stage, config, [(r.role, r.id) for r in refs])
    run = artifact.Run(out, art_id, "model", stage, config, refs)
    artifact.prepare_partial(run, replace=True)
    for f in Path(model_dir).iterdir():
        if f.is_file() and f.name != artifact.MANIFEST:
            shutil.copy2(f, run.dir / f.name)
    run.commit({}, replace=True)
    return out
