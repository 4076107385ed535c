"""Generation with transformers' `generate`: works on every device, shares the policy's weights.

Prompts are batched with left padding; message lists go through the chat template. Seeds
are applied inside `torch.random.fork_rng`, so the same seed gives the same samples without
touching the caller's global RNG. Log-probabilities come from the raw logits divided by
the temperature, matching what the RL loss recomputes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llmforge.gen.base import Completion, Prompt, encode_prompt, stop_token_ids, to_completion


class TransformersGenerator:
    """`Generator` over a live `PreTrainedModel` (the RL policy itself, so no weight sync)."""

    def __init__(self, model, tokenizer, batch_size: int = 16, template_kwargs=None):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.template_kwargs = dict(template_kwargs or {})
        self.stop_ids = stop_token_ids(tokenizer)
        # A model's generation config may stop at more ids (Llama 3: <|eot_id|> and others).
        extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        for i in extra if isinstance(extra, list) else [extra]:
            if i is not None and i not in self.stop_ids:
                self.stop_ids.append(i)
        self.pad_id = tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.stop_ids[0] if self.stop_ids else 0

    @classmethod
    def from_pretrained(cls, path, **kwargs) -> TransformersGenerator:
        from llmforge import causal_lm

        model, tokenizer = causal_lm.load(path)  # remote code refused, weights checked
        return cls(model, tokenizer, **kwargs)

    def encode(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Token ids of each prompt (chat-rendered prompts carry their own special tokens)."""
        return [encode_prompt(self.tokenizer, p, **self.template_kwargs) for p in prompts]

    def generate(
        self,
        prompts: Sequence[Prompt],
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
        seed: int = 0,
    ) -> list[list[Completion]]:
        return self.generate_ids(self.encode(prompts), n, temperature, top_p, max_new_tokens, seed)

    def generate_ids(
        self,
        encoded: Sequence[list[int]],
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
        seed: int = 0,
    ) -> list[list[Completion]]:
        """`generate` from token ids (a conversation continued mid-way, `gen.tools`)."""
        per_batch = max(1, self.batch_size // n)
        results: list[list[Completion]] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(encoded), per_batch):
                chunk = encoded[start : start + per_batch]
                sample = dict(temperature=temperature, top_p=top_p, seed=seed + start)
                results += self._generate_batch(chunk, n, max_new_tokens, **sample)
        finally:
            self.model.train(was_training)
        return results

    def _left_pad(self, prompt_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompt_ids)
        ids = torch.full((len(prompt_ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompt_ids):
            ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[row, width - len(p) :] = 1
        return ids, mask

    @torch.inference_mode()
    def _generate_batch(self, prompt_ids, n, max_new_tokens, temperature, top_p, seed):
        ids, mask = self._left_pad(prompt_ids)
        device = next(self.model.parameters()).device
        sampling = temperature > 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = self.model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                do_sample=sampling,
                temperature=temperature if sampling else None,
                top_p=top_p if sampling else None,
                top_k=None,
                max_new_tokens=max_new_tokens,
                num_return_sequences=n,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
                return_dict_in_generate=True,
                output_logits=True,
            )
        new = out.sequences[:, ids.shape[1] :].cpu()
        logits = torch.stack(out.logits, dim=1).float().cpu()
        logprobs = torch.log_softmax(logits / (temperature if sampling else 1.0), dim=-1)
        token_logprobs = logprobs.gather(-1, new.unsqueeze(-1)).squeeze(-1)
        rows = [
            self._completion(new[r], token_logprobs[r], prompt_ids[r // n]) for r in range(len(new))
        ]
        return [rows[i : i + n] for i in range(0, len(rows), n)]

    def _completion(self, tokens: torch.Tensor, logprobs: torch.Tensor, prompt_ids) -> Completion:
        return to_completion(
            self.tokenizer, tokens.tolist(), logprobs.tolist(), self.stop_ids, prompt_ids
        )
