"""One HTTP client per vLLM server: sampling over the OpenAI completions route, and the RL
control routes a server started with `VLLM_SERVER_DEV_MODE=1` adds (pause, reload, weight
version, abort).

Prompts go in as token ids and completions come back as token ids (`return_token_ids`), so
the trainer's tokenizer is the only one that runs and no text round trip can change a
token. The log-prob of each sampled token is the server's: it must run with
`--logprobs-mode processed_logprobs`, the distribution after temperature scaling, which is
the one the trainer recomputes (the default, raw mode, ignores the temperature).

Every call has a timeout, and every error answer raises with the server's own text: TRL
#6796 was a weight sync whose HTTP answers were discarded, so a failed sync hung silently.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import httpx

from llmforge.errors import RunFailed


class ServerDown(RunFailed):
    """A server did not answer (refused, reset or timed out): it is dead or wedged."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"vLLM server {url} is not answering ({reason})")
        self.url, self.reason = url, reason


@dataclass(frozen=True)
class Sample:
    """One choice of a completions answer."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str


class ServerClient:
    """HTTP calls to one server; at most `concurrency` generation requests in flight."""

    def __init__(self, url: str, timeout_s: float = 600.0, concurrency: int = 8):
        self.url = url.rstrip("/")
        self.timeout_s, self.concurrency = timeout_s, concurrency
        self.slots = threading.BoundedSemaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency + 4)
        self.http = httpx.Client(base_url=self.url, timeout=timeout_s, limits=limits)

    def call(self, method: str, path: str, timeout_s: float | None = None, **kwargs):
        """The JSON answer of one request, or `ServerDown` / `RunFailed` with the server's text."""
        try:
            r = self.http.request(method, path, timeout=timeout_s or self.timeout_s, **kwargs)
        except httpx.TransportError as e:  # refused, reset or timed out: nobody is answering
            raise ServerDown(self.url, f"{path}: {type(e).__name__}: {e}") from e
        if r.status_code >= 400:
            raise RunFailed(
                f"vLLM server {self.url}{path} answered {r.status_code}: {r.text[:800]}"
            )
        return r.json() if r.content else None

    def healthy(self, timeout_s: float = 5.0) -> bool:
        try:
            return self.http.get("/health", timeout=timeout_s).status_code == 200
        except httpx.TransportError:
            return False

    def complete(self, prompt_ids: list[int], n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int, stop_ids: list[int]) -> list[Sample]:  # fmt: skip
        """`n` samples of one prompt with the log-prob of every sampled token."""
        body = {
            "prompt": prompt_ids,
            "n": n,
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
            "seed": seed,
            "logprobs": 0,
            "return_token_ids": True,
            "stop_token_ids": stop_ids,
            "skip_special_tokens": False,
        }
        with self.slots:
            answer = self.call("POST", "/v1/completions", json=body)
        choices = sorted(answer["choices"], key=lambda c: c["index"])
        return [
            Sample(c["token_ids"], c["logprobs"]["token_logprobs"], c["finish_reason"])
            for c in choices
        ]

    # ---------------------------------------------------------- RL control routes

    def reload(self, weights_dir: str, version: int, timeout_s: float) -> None:
        """Reload weights from `weights_dir` in place and tag them `version`.

        `/pause?mode=wait` lets in-flight requests finish on the old weights and holds new
        ones until `/resume`, so every request is sampled from one version.
        """
        self.call("POST", "/pause", timeout_s, params={"mode": "wait"})
        try:
            rpc = {"method": "reload_weights", "kwargs": {"weights_path": weights_dir}}
            self.call("POST", "/collective_rpc", timeout_s, json={**rpc, "timeout": timeout_s})
            self.set_version(version, timeout_s)
        finally:
            self.call("POST", "/resume", timeout_s)

    def set_version(self, version: int, timeout_s: float | None = None) -> None:
        self.call("POST", "/update_weight_version", timeout_s, json={"new_version": str(version)})

    def version(self, timeout_s: float | None = None) -> str:
        return self.call("GET", "/weight_info", timeout_s)["weight_version"]

    def reset(self, timeout_s: float = 30.0) -> None:
        """Undo what a killed trainer may have left: requests still running, a pause."""
        self.call("POST", "/abort_requests", timeout_s, json={})
        self.call("POST", "/resume", timeout_s)

    def check_ready(self) -> None:
        """Fail early, saying how to fix it, when the server lacks the RL routes or returns
        log-probs that ignore the temperature."""
        fix = "start it with VLLM_SERVER_DEV_MODE=1 and --logprobs-mode processed_logprobs"
        try:
            self.version(timeout_s=60)
        except ServerDown:
            raise
        except RunFailed as e:
            raise RunFailed(f"vLLM server {self.url} has no RL routes (/weight_info): {fix}") from e
        if abs(self.probe_logprob(1.0) - self.probe_logprob(0.5)) < 1e-7:
            raise RunFailed(f"vLLM server {self.url} returns raw log-probs: {fix}")

    def probe_logprob(self, temperature: float) -> float:
        """The log-prob of token 0 after the prompt [1, 2, 3] at `temperature`."""
        body = {"prompt": [1, 2, 3], "max_tokens": 1, "temperature": temperature, "seed": 0,
                "logprobs": 1, "logprob_token_ids": [0], "return_tokens_as_token_ids": True}  # fmt: skip
        answer = self.call("POST", "/v1/completions", 60, json=body)
        return answer["choices"][0]["logprobs"]["top_logprobs"][0]["token_id:0"]

    def close(self) -> None:
        self.http.close()
