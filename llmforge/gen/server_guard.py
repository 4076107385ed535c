"""Runs one inference server so that it never outlives whoever started it.

    python llmforge/gen/server_guard.py [--announce FILE --port P] -- CMD ARGS...

vLLM's API server forks an engine process that survives a SIGKILL of the server, so
killing one pid does not clean up. This guard starts CMD in a process group of its own and
kills that whole group when CMD exits, when the guard gets SIGTERM/SIGINT, or when the
process that started the guard dies (it polls its parent pid twice a second; the kernel's
`PR_SET_PDEATHSIG` would fire when the starting *thread* ends, and servers are restarted
from worker threads). With `--announce`, it writes
`http://HOST:PORT` to FILE once the server answers `/health`: how a server in a Slurm job
tells the trainer where it is. Standard library only; nothing fits this from a library
(subprocess has no parent-death hook, and a process group is the only handle that reaches
vLLM's engine process).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def announce(path: str, port: int) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(f"http://{socket.getfqdn()}:{port}\n")
    os.replace(tmp, path)


def kill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--announce", help="write the server's URL here once it is healthy")
    parser.add_argument("--port", type=int, help="the server's port (with --announce)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    parent = os.getppid()
    child = subprocess.Popen(command, start_new_session=True)
    print(f"server_guard: started pid {child.pid}", file=sys.stderr, flush=True)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    announced = not args.announce
    try:
        while child.poll() is None and not stop and os.getppid() == parent:
            if not announced and healthy(args.port):
                announce(args.announce, args.port)
                announced = True
            time.sleep(0.5)
    finally:
        kill_group(child)
    code = child.wait()
    print(f"server_guard: server exited with code {code}", file=sys.stderr, flush=True)
    if stop:
        return 0
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell says


if __name__ == "__main__":
    sys.exit(main())
