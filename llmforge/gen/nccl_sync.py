"""Weight sync by NCCL broadcast from the trainer's GPU into vLLM servers (GPU nodes only).

The servers run vLLM's NCCL weight-transfer engine (`--weight-transfer-config
'{"backend": "nccl"}'`, added by `server_process.vllm_command`). The trainer is rank 0 of
one NCCL group and the servers' workers follow it. The trainer side needs no vLLM: torch's
own NCCL binding mints the unique id, which reaches the servers base64-encoded
(`nccl_unique_id_b64`, vLLM's rendezvous for trainers outside its process groups); both
sides then run the one-element all-reduce vLLM uses as a warm-up. Each sync is

    POST /start_weight_update                     on every server
    POST /update_weights {names, dtypes, shapes}  on every server, while rank 0 broadcasts
                                                  each tensor in that order
    POST /finish_weight_update {weight_version}

The HTTP calls carry the deadline and the NCCL calls run on a daemon thread that is left
behind if they hang, so a transfer that cannot finish raises `RunFailed` instead of
blocking forever (the fix of TRL #6796). Under FSDP2 every rank gathers each full tensor
and waits for it before rank 0 broadcasts it: interleaving the gathers with the transfer
group's broadcasts deadlocks (TRL #6797/#7103). This path needs CUDA and vLLM on the
servers, so it runs only in the GPU check (`bench/rl_async_bench.py --gpu`).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator

from llmforge.errors import RunFailed
from llmforge.gen.server_client import ServerClient
from llmforge.gen.weight_sync import check_version, run_on_all


def full_tensors(model) -> Iterator[tuple[str, object]]:
    """(name, full tensor) for every parameter, gathered and finished one at a time."""
    import torch

    for name, param in model.named_parameters():
        tensor = param.full_tensor() if hasattr(param, "full_tensor") else param
        torch.cuda.current_stream().synchronize()
        yield name, tensor.detach()


class NCCLSync:
    """One NCCL group from this rank-0 trainer to every server's workers."""

    def __init__(self, clients: list[ServerClient], timeout_s: float):
        import torch

        self.torch, self.comm = torch, None
        sizes = [int(c.call("GET", "/get_world_size", timeout_s)["world_size"]) for c in clients]
        uid = torch.cuda.nccl.unique_id()
        world = 1 + sum(sizes)
        offsets = [1 + sum(sizes[:i]) for i in range(len(clients))]

        def init_server(client: ServerClient) -> None:
            info = {"nccl_unique_id_b64": base64.b64encode(uid).decode(), "world_size": world,
                    "rank_offset": offsets[clients.index(client)], "packed": False}  # fmt: skip
            client.call("POST", "/init_weight_transfer_engine", timeout_s, json={"init_info": info})

        def init_trainer() -> None:
            self.comm = torch.cuda.nccl.init_rank(world, uid, 0)
            warmup = torch.zeros(1, device="cuda")
            torch.cuda.nccl.all_reduce([warmup], comms=[self.comm])
            torch.cuda.current_stream().synchronize()

        self._beside(init_trainer, lambda: run_on_all(clients, init_server, timeout_s, "NCCL init"))

    def _beside(self, nccl_work, http_work) -> None:
        """Run `nccl_work` on a daemon thread while `http_work` (which has deadlines) runs
        here; a failure on either side raises, and a hung NCCL call is left behind."""
        errors: list[BaseException] = []

        def guarded() -> None:
            try:
                nccl_work()
            except BaseException as e:  # re-raised in the caller below
                errors.append(e)

        thread = threading.Thread(target=guarded, name="nccl-weight-sync", daemon=True)
        thread.start()
        http_work()
        thread.join(timeout=60.0)
        if errors:
            raise RunFailed(f"NCCL weight transfer failed: {errors[0]!r}") from errors[0]
        if thread.is_alive():
            raise RunFailed("the servers finished the NCCL transfer but the trainer did not")

    def push(self, clients: list[ServerClient], model, version: int, timeout_s: float,
             is_sender: bool = True) -> None:  # fmt: skip
        """Broadcast every parameter of `model`; ranks other than 0 only join the gathers."""
        if not is_sender:
            for _ in full_tensors(model):
                pass
            return
        names, dtypes, shapes = [], [], []
        for name, p in model.named_parameters():
            names.append(name)
            dtypes.append(str(p.dtype).removeprefix("torch."))
            shapes.append(list(p.shape))
        meta = {"names": names, "dtype_names": dtypes, "shapes": shapes}
        run_on_all(clients, lambda c: c.call("POST", "/start_weight_update", timeout_s),
                   timeout_s, "start_weight_update")  # fmt: skip

        def send() -> None:
            for _, tensor in full_tensors(model):
                self.torch.cuda.nccl.broadcast([tensor.contiguous()], root=0, comms=[self.comm])
            self.torch.cuda.current_stream().synchronize()

        def receive(client: ServerClient) -> None:
            client.call("POST", "/update_weights", timeout_s, json={"update_info": meta})
            client.call("POST", "/finish_weight_update", timeout_s,
                        json={"weight_version": str(version)})  # fmt: skip
            check_version(client, version, timeout_s)

        self._beside(send, lambda: run_on_all(clients, receive, timeout_s, "NCCL weight sync"))

    def close(self) -> None:
        self.comm = None
