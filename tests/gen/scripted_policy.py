"""A scripted policy for multi-turn tests: it writes what a function of the conversation
so far says, from token ids (`generate_ids`) as the tool loop calls it, or from prompts."""

from llmforge.gen.base import Completion, encode_prompt


class Scripted:
    """A policy that writes `reply(conversation so far)` whatever the sampling settings, and
    records every prompt it was given (as ids)."""

    def __init__(self, tokenizer, reply):
        self.tokenizer, self.reply, self.seen = tokenizer, reply, []
        self.stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pad_id = tokenizer.pad_token_id

    def generate_ids(self, prompt_ids, n=1, temperature=1.0, top_p=1.0, max_new_tokens=256,
                     seed=0):  # fmt: skip
        out = []
        for ids in prompt_ids:
            self.seen.append(list(ids))
            text = self.reply(self.tokenizer.decode(ids))
            full = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.stop]
            ids_out = full[:max_new_tokens]
            done = len(ids_out) == len(full)
            shown = text if done else self.tokenizer.decode(ids_out)
            c = Completion(shown, ids_out, [-0.5] * len(ids_out), "stop" if done else "length",
                           list(ids))  # fmt: skip
            out.append([c] * n)
        return out

    def generate(self, prompts, n=1, temperature=1.0, top_p=1.0, max_new_tokens=256, seed=0):
        ids = [encode_prompt(self.tokenizer, p) for p in prompts]
        return self.generate_ids(ids, n, temperature, top_p, max_new_tokens, seed)
