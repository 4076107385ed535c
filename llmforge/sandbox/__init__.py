"""Run untrusted (model-written) Python in a locked-down interpreter and report what it did.

Walls, outermost first (docs/rewards.md says what they guarantee and what they do not):

- **bubblewrap** when it works here (`isolation() == "bwrap"`): new user, pid, network,
  ipc, uts and cgroup namespaces, all capabilities dropped, killed with its parent. The
  filesystem it sees is read-only `/usr` and the Python installation (its site-packages
  hidden), a fresh `/proc`, `/dev` and `/tmp`, and the run's own work directory; no other
  path exists inside, so no data set or test file can be read.
- otherwise an empty network namespace from `unshare -n` (`"namespace"`), or nothing
  (`"audit-hook"`); `LLMFORGE_SANDBOX=auto|bwrap|namespace|audit-hook` picks one (`bwrap`
  then fails when bubblewrap does not work, instead of falling back).
- in every mode `python -I -S` (no site-packages, no PYTHON* variables), a minimal
  environment, a fresh work directory, and `guard.py` before anything else: hard
  RLIMIT_CPU/AS/FSIZE and an audit hook that allows writes only in the work directory,
  reads only there and in the standard library, and refuses processes, sockets, ctypes and
  introspection that could reach the hook. A wall-clock timeout kills the process group.

Output goes to files, not pipes, so a program that prints gigabytes cannot fill the
parent's memory (RLIMIT_FSIZE stops it at `fsize_mb`).
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llmforge.errors import BadInput

Status = Literal["passed", "failed", "timeout", "memory"]
MODES = ("bwrap", "namespace", "audit-hook")
OUTPUT_CAP = 64 * 1024
_GUARD = Path(__file__).with_name("guard.py")
# Run the program as __main__ in a namespace of its own, as `python main.py` would.
_RUN_MAIN = """
import sys
sys.argv = ["main.py"]
with open("main.py", encoding="utf-8") as _f:
    _code = compile(_f.read(), "main.py", "exec")
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
"""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandboxed interpreter."""

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


# ---------------------------------------------------------------- which wall is in force


def python_binary() -> str:
    """The base interpreter (never a venv's wrapper), so `-I -S` sees only the stdlib."""
    return os.path.realpath(sys.executable)


def stdlib_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(dict.fromkeys(os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib")))


def site_dirs() -> tuple[str, ...]:
    """Third-party package directories of the base interpreter: hidden from the child."""
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}
    paths = sysconfig.get_paths(vars=base)
    found = [os.path.realpath(paths[k]) for k in ("purelib", "platlib")]
    found += [os.path.join(d, "site-packages") for d in stdlib_dirs()]
    found += [os.path.join(d, "dist-packages") for d in stdlib_dirs()]
    return tuple(d for d in dict.fromkeys(found) if os.path.isdir(d))


@functools.cache
def _unshare_prefix() -> tuple[str, ...]:
    """The command prefix that gives the child an empty network namespace, if any works."""
    if shutil.which("unshare") is None:
        return ()
    for prefix in (("unshare", "-n"), ("unshare", "-rn")):
        if _works([*prefix, "true"]):
            return prefix
    return ()


@functools.cache
def _bwrap_ok() -> bool:
    if shutil.which("bwrap") is None:
        return False
    with tempfile.TemporaryDirectory(prefix="llmforge-bwrap-") as work:
        return _works([*bwrap_prefix(work), python_binary(), "-I", "-S", "-c", "pass"])


def _works(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def isolation() -> str:
    """The wall in force: 'bwrap', 'namespace' (network namespace only) or 'audit-hook'."""
    want = os.environ.get("LLMFORGE_SANDBOX", "auto")
    if want not in ("auto", *MODES):
        raise BadInput(f"LLMFORGE_SANDBOX must be auto or one of {MODES}, got {want!r}")
    if want in ("auto", "bwrap") and _bwrap_ok():
        return "bwrap"
    if want == "bwrap":
        raise BadInput("LLMFORGE_SANDBOX=bwrap, but bubblewrap is missing or cannot run here")
    if want in ("auto", "namespace") and _unshare_prefix():
        return "namespace"
    if want == "namespace":
        raise BadInput("LLMFORGE_SANDBOX=namespace, but unshare -n is not permitted here")
    return "audit-hook"


def bwrap_prefix(work: str) -> list[str]:
    """bubblewrap arguments: namespaces, a read-only minimal root and `work` writable."""
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    args += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    prefix = os.path.realpath(sys.base_prefix)
    if prefix != "/usr" and not prefix.startswith("/usr/"):
        args += ["--ro-bind", prefix, prefix]
    for site in site_dirs():
        args += ["--tmpfs", site]
    for extra in ("/etc/ld.so.cache", "/etc/localtime", "/usr/share/zoneinfo"):
        args += ["--ro-bind-try", extra, extra]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    return [*args, "--bind", work, work, "--chdir", work, "--"]


# ---------------------------------------------------------------- launching


@functools.cache
def _guard_source() -> str:
    return _GUARD.read_text(encoding="utf-8")


def bootstrap(script: str, work: str, limits: Limits) -> str:
    """The `-c` text: install the guard (in a namespace of its own), then run `script`."""
    roots = (*stdlib_dirs(), "/usr/share/zoneinfo", "/etc/localtime")
    install = (
        f"{work!r}, {roots!r}, {site_dirs()!r}, {int(limits.cpu_s)}, "
        f"{int(limits.memory_mb) * 2**20}, {int(limits.fsize_mb) * 2**20}"
    )
    return (
        f"_g = {{'__name__': 'llmforge_sandbox_guard'}}\n"
        f"exec(compile({_guard_source()!r}, 'guard.py', 'exec'), _g)\n"
        f"_g['install']({install})\n"
        f"del _g\n{script}"
    )


def command(script: str, work: str, limits: Limits, mode: str | None = None) -> list[str]:
    """The argv that runs `script` under the guard, inside the wall `mode` (default: in force)."""
    mode = mode or isolation()
    prefix = {"bwrap": bwrap_prefix(work), "namespace": list(_unshare_prefix())}.get(mode, [])
    return [*prefix, python_binary(), "-I", "-S", "-c", bootstrap(script, work, limits)]


@dataclass
class Launched:
    """A sandboxed interpreter started by `launch`; `finish` waits for it and reads its output."""

    proc: subprocess.Popen
    out: Path
    err: Path
    started: float

    def finish(self, deadline: float) -> tuple[int | None, bool]:
        """Wait until `deadline` (monotonic); kill the process group past it. (rc, timed_out)."""
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            return self.proc.returncode, False
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode, True

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def output(self) -> tuple[str, str]:
        with open(self.out, "rb") as f:
            stdout = f.read(OUTPUT_CAP).decode(errors="replace")
        with open(self.err, "rb") as f:
            f.seek(max(0, self.err.stat().st_size - OUTPUT_CAP))
            stderr = f.read().decode(errors="replace")
        return stdout, stderr


def launch(
    script: str,
    base: Path,
    name: str,
    limits: Limits,
    pass_fds: Sequence[int] = (),
    stdin: int | None = subprocess.DEVNULL,
) -> Launched:
    """Start `script` in the sandbox with `base/name` as its (fresh) work directory.

    Its stdout and stderr go to `base/name.out` and `base/name.err`, outside its view.
    """
    work = base / name
    work.mkdir(exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
    out, err = base / f"{name}.out", base / f"{name}.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(
            command(script, str(work), limits),
            cwd=work,
            env=env,
            stdin=stdin,
            stdout=fo,
            stderr=fe,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
        )
    return Launched(proc, out, err, time.monotonic())


# ---------------------------------------------------------------- one program, by exit status


def killed_by(returncode: int | None, *signals: int) -> bool:
    """Whether the child died of one of `signals` (bwrap reports that as 128 + signal)."""
    return returncode is not None and any(returncode in (-s, 128 + s) for s in signals)


def _verdict(returncode: int | None, stderr: str, timed_out: bool) -> Status:
    if timed_out or killed_by(returncode, signal.SIGXCPU, signal.SIGKILL):
        return "timeout"
    if returncode == 0:
        return "passed"
    if "MemoryError" in stderr.rsplit("Traceback", 1)[-1]:
        return "memory"
    return "failed"


def run_python(code: str, limits: Limits = Limits(), stdin: str | None = None) -> Result:
    """Run `code` as `main.py` in a fresh work directory; the verdict is its exit status.

    For running a program, not for judging one: the code verifier does not trust the exit
    status (see `llmforge.verifiers.code`).
    """
    with tempfile.TemporaryDirectory(prefix="llmforge-sandbox-") as tmp:
        base = Path(tmp)
        (base / "main").mkdir()
        (base / "main" / "main.py").write_text(code, encoding="utf-8")
        (base / "stdin").write_text(stdin or "", encoding="utf-8")  # a file: no pipe to block on
        with open(base / "stdin", "rb") as given:
            run = launch(_RUN_MAIN, base, "main", limits, stdin=given.fileno())
        returncode, timed_out = run.finish(run.started + limits.wall_s)
        stdout, stderr = run.output()
    status = _verdict(returncode, stderr, timed_out)
    return Result(status, returncode, stdout, stderr, time.monotonic() - run.started)


def run_many(codes: Sequence[str], limits: Limits = Limits(), workers: int = 4) -> list[Result]:
    """Run several programs concurrently (threads each waiting on one subprocess), in order."""
    return parallel(lambda c: run_python(c, limits), codes, workers)


def parallel(fn: Callable, items: Sequence, workers: int) -> list:
    """`[fn(x) for x in items]`, `workers` at a time, in order (each waits on subprocesses)."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        return list(pool.map(fn, items))
