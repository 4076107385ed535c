"""Training measurements: the matmul peak of this machine, FLOPs per token, MFU, throughput.

MFU is judged against a peak measured in-process at start (a short square matmul in the
training dtype), not a datasheet figure: on shared CPUs the peak varies by a third from
run to run, so only a same-process probe makes the ratio meaningful.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from llmforge import distributed


def measure_peak_flops(precision: str = "bf16", seconds: float = 0.5, n: int | None = None
                       ) -> float:  # fmt: skip
    """FLOP/s of the best n x n matmul timing over about `seconds` (0 when seconds is 0).

    On CUDA the default is n = 8192 timed ten products at a time: a 1024 product takes a
    few microseconds on an H100/H200, so launch and sync overhead would dominate its time
    and understate the peak several-fold (and overstate MFU). CPUs keep n = 1024.
    """
    if seconds <= 0:
        return 0.0
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    device = distributed.device()  # this rank's GPU, not always cuda:0
    cuda = device.type == "cuda"
    n = n or (8192 if cuda else 1024)
    reps = 10 if cuda else 1
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b  # warm up
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        if cuda:
            torch.cuda.synchronize(device)
        best = min(best, (time.perf_counter() - start) / reps)
    return 2 * n**3 / best


def flops_per_token(cfg, seq_len: int) -> float:
    """Training FLOPs per token: the model package's count when present, else 6N + attention.

    The fallback is the PaLM (appendix B) estimate: 6 x non-embedding parameters plus
    12 x layers x d_model x seq_len for attention scores.
    """
    try:
        from llmforge.model.flops import flops_per_token as model_flops
    except ImportError:
        model_flops = None
    if model_flops is not None:
        return float(model_flops(cfg, seq_len))
    d, layers = cfg.d_model, cfg.n_layers
    kv = cfg.n_kv_heads * cfg.head_size
    attn = d * d * 2 + d * kv * 2 + (d * d if cfg.gated_attn else 0)
    mlp = 3 * d * cfg.ffn_hidden
    head = d * cfg.vocab_size
    return 6 * (layers * (attn + mlp) + head) + 12 * layers * d * seq_len


class Meter:
    """Tokens/s and data-wait time between two `read()` calls."""

    def __init__(self):
        self.start = time.perf_counter()
        self.tokens = 0
        self.data_wait = 0.0

    def add(self, tokens: int, data_wait: float) -> None:
        self.tokens += tokens
        self.data_wait += data_wait

    def read(self) -> dict:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        out = {"tokens_per_s": self.tokens / elapsed, "data_wait_frac": self.data_wait / elapsed}
        self.__init__()
        return out


def trim_metrics(path: Path, last_step: int, match: dict | None = None) -> None:
    """Drop metric lines written after `last_step` (a resumed run will write them again).

    Only lines carrying every key/value of `match` are considered, so a staged run (e.g.
    context-extend's `{"length": L}`) trims its own stage only.
    """
    path = Path(path)
    if not path.is_file():
        return
    match = match or {}

    def keep(record: dict) -> bool:
        ours = all(record.get(k) == v for k, v in match.items())
        return not ours or record.get("step", 0) <= last_step

    lines = [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    kept = [x for x in lines if keep(json.loads(x))]
    path.write_text("".join(x + "\n" for x in kept), encoding="utf-8")
