"""Run untrusted (model-written) Python in a locked-down subprocess and report a verdict.

Layers, outermost first:
- a fresh temporary working directory, deleted afterwards, and a minimal environment;
- `python -I` (isolated: no user site, no PYTHON* variables, script dir not on sys.path);
- no network: a new, empty network namespace via `unshare -n` (or `unshare -rn` as a
  normal user) when the kernel allows it; `network_isolation()` says which is in force.
  In every case an audit hook also refuses socket creation;
- resource limits set in the child before the untrusted code runs, soft == hard so they
  cannot be raised: RLIMIT_CPU (CPU seconds), RLIMIT_AS (address space), RLIMIT_FSIZE
  (largest file it may write), plus a wall-clock timeout that kills the process group;
- a `sys.addaudithook` hook that refuses writes outside the working directory (open in a
  write mode, remove, rename, mkdir, ...) and refuses starting processes (fork, exec,
  subprocess, os.system), so the hook cannot be escaped by a child interpreter.

Audit hooks are defence in depth, not a security boundary (ctypes can get around them);
the namespace and the rlimits are the hard walls. Run real untrusted workloads in a
container as well.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

Status = Literal["passed", "failed", "timeout", "memory"]
_OUTPUT_CAP = 64 * 1024

# Runs inside the child before the untrusted code; {placeholders} are filled by `_guard`.
_GUARD = r"""
import os, resource, sys
for _lim, _val in (({cpu}, {cpu_s}), ({as_}, {mem}), ({fsize}, {fsize_b})):
    resource.setrlimit(_lim, (_val, _val))
_ROOT = os.path.realpath(os.getcwd())
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_PATH_EVENTS = {{"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown",
    "os.truncate", "os.symlink", "os.link", "os.utime", "shutil.rmtree", "shutil.move"}}
_PROCESS_EVENTS = {{"os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn",
    "os.system", "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg"}}

def _inside(path):
    if isinstance(path, int):
        return True
    real = os.path.realpath(os.fsdecode(path))
    return real == _ROOT or real.startswith(_ROOT + os.sep) or real == os.devnull

def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = (flags or 0) & _WRITE_FLAGS or (mode and any(c in mode for c in "wax+"))
        if path is not None and writing and not _inside(path):
            raise PermissionError(f"sandbox: writing outside the work directory: {{path}}")
    elif event in _PATH_EVENTS:
        for path in args[:2]:
            if isinstance(path, (str, bytes, os.PathLike)) and not _inside(path):
                raise PermissionError(f"sandbox: {{event}} outside the work directory")
    elif event in _PROCESS_EVENTS:
        raise PermissionError(f"sandbox: {{event}} is not allowed")
    elif event.startswith("socket.") and event != "socket.gethostname":
        raise PermissionError("sandbox: network access is disabled")

sys.addaudithook(_hook)
del resource
sys.argv = ["main.py"]
_code = compile(open("main.py", encoding="utf-8").read(), "main.py", "exec")
exec(_code, {{"__name__": "__main__", "__builtins__": __builtins__}})
"""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandboxed run."""

    wall_s: float = 10.0
    cpu_s: int = 5
    memory_mb: int = 1024
    fsize_mb: int = 16


@dataclass(frozen=True)
class Result:
    """What a sandboxed run did. `status` is the verdict; output is capped at 64 KiB."""

    status: Status
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.cache
def _unshare_prefix() -> tuple[str, ...]:
    """The command prefix that gives the child an empty network namespace, if any works."""
    if shutil.which("unshare") is None:
        return ()
    for prefix in (("unshare", "-n"), ("unshare", "-rn")):
        try:
            ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if ok.returncode == 0:
            return prefix
    return ()


def network_isolation() -> str:
    """'namespace' when `unshare` isolates the network, else 'audit-hook' only."""
    return "namespace" if _unshare_prefix() else "audit-hook"


def _guard(limits: Limits) -> str:
    import resource

    return _GUARD.format(
        cpu=resource.RLIMIT_CPU,
        cpu_s=int(limits.cpu_s),
        as_=resource.RLIMIT_AS,
        mem=int(limits.memory_mb) * 2**20,
        fsize=resource.RLIMIT_FSIZE,
        fsize_b=int(limits.fsize_mb) * 2**20,
    )


def _verdict(returncode: int | None, stderr: str, timed_out: bool) -> Status:
    if timed_out or returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timeout"
    if returncode == 0:
        return "passed"
    if "MemoryError" in stderr.rsplit("Traceback", 1)[-1]:
        return "memory"
    return "failed"


def run_python(code: str, limits: Limits = Limits(), stdin: str | None = None) -> Result:
    """Run `code` as `main.py` in a fresh temporary directory under the sandbox."""
    with tempfile.TemporaryDirectory(prefix="llmforge-sandbox-") as work:
        with open(os.path.join(work, "main.py"), "w", encoding="utf-8") as f:
            f.write(code)
        env = {"PATH": "/usr/bin:/bin", "HOME": work, "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
        cmd = [*_unshare_prefix(), sys.executable, "-I", "-c", _guard(limits)]
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            cwd=work,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        timed_out = False
        try:
            out, err = proc.communicate(stdin.encode() if stdin else None, timeout=limits.wall_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        duration = time.monotonic() - start
    stdout = out[:_OUTPUT_CAP].decode(errors="replace")
    stderr = err[-_OUTPUT_CAP:].decode(errors="replace")
    status = _verdict(proc.returncode, stderr, timed_out)
    return Result(status, proc.returncode, stdout, stderr, duration)


def run_many(codes: Sequence[str], limits: Limits = Limits(), workers: int = 4) -> list[Result]:
    """Run several programs concurrently (threads each waiting on one subprocess), in order."""
    if not codes:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(codes)))) as pool:
        return list(pool.map(lambda c: run_python(c, limits), codes))
