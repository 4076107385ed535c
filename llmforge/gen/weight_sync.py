"""Pushing the trainer's weights into running vLLM servers, each step under a deadline.

`DiskSync` (CPU, and any cluster with a shared filesystem): the trainer writes the weights
as safetensors into `DIR/v0000012/` (atomically: a temporary name, then a rename) and
every server, in parallel, pauses (in-flight requests finish on the old weights), reloads
in place from that directory (`collective_rpc reload_weights`, vLLM's re-load path that
also repacks CPU kernels' weights), tags them with the version and resumes. Then each
server must pass `/health` and report the new version, or the sync raises `RunFailed`
naming the server; a sync that outlives `timeout_s` raises too instead of hanging.

`NCCLSync` (GPUs) lives in `llmforge.gen.nccl_sync`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from llmforge.errors import RunFailed
from llmforge.gen.server_client import ServerClient

PREFIX = "v"


def write_weights(state_dict: Mapping, root: Path, version: int) -> Path:
    """`root/vVERSION/model.safetensors`, written under a temporary name and renamed.

    Tensors that share storage (a tied head) are written once, under their first name;
    vLLM ties them again on load.
    """
    import torch
    from safetensors.torch import save_file

    final = Path(root) / f"{PREFIX}{version:07d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    seen, tensors = set(), {}
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor) or tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        tensors[name] = tensor.detach().to("cpu").contiguous()
    save_file(tensors, str(tmp / "model.safetensors"))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def run_on_all(clients: list[ServerClient], work, timeout_s: float, what: str) -> None:
    """`work(client)` on every server in parallel; `RunFailed` naming the first that fails
    or is still busy when `timeout_s` runs out (its thread is abandoned, not joined)."""
    pool = ThreadPoolExecutor(max_workers=len(clients), thread_name_prefix="weight-sync")
    futures = {pool.submit(work, c): c for c in clients}
    deadline = time.monotonic() + timeout_s
    try:
        for future, client in futures.items():
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                raise RunFailed(
                    f"{what} to vLLM server {client.url} did not finish within {timeout_s:.0f} s "
                    "(rollout.sync_timeout_s); is the server overloaded or wedged?"
                ) from None
            except RunFailed as e:
                raise RunFailed(f"{what} to vLLM server {client.url} failed: {e}") from e
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def check_version(client: ServerClient, version: int, timeout_s: float) -> None:
    """After a sync: the server is healthy and serves `version`."""
    if not client.healthy(timeout_s=min(timeout_s, 30.0)):
        raise RunFailed(f"vLLM server {client.url} failed its health check after the sync")
    found = client.version(timeout_s)
    if found != str(version):
        raise RunFailed(f"vLLM server {client.url} reports weights {found}, expected {version}")


class DiskSync:
    """Weights through a directory every server can read; keeps the newest `keep`."""

    def __init__(self, root: Path, keep: int = 2):
        self.root, self.keep = Path(root), keep
        self.latest: Path | None = None

    def push(self, clients: list[ServerClient], state_dict: Mapping, version: int,
             timeout_s: float) -> None:  # fmt: skip
        self.latest = write_weights(state_dict, self.root, version)
        self.load(clients, version, timeout_s)
        self.prune()

    def load(self, clients: list[ServerClient], version: int, timeout_s: float) -> None:
        """Make `clients` serve the newest written weights (also after a server restart)."""
        if self.latest is None:
            raise RunFailed("no weights were written yet to reload")
        path = str(self.latest.resolve())

        def one(client: ServerClient) -> None:
            client.reload(path, version, timeout_s)
            check_version(client, version, timeout_s)

        run_on_all(clients, one, timeout_s, f"weight sync (version {version})")

    def prune(self) -> None:
        found = sorted(p for p in self.root.glob(f"{PREFIX}[0-9]*[0-9]") if p.is_dir())
        for old in found[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def close(self) -> None:
        pass
