"""A real tiny judge for tests: a random Llama fine-tuned in seconds to reply "Score: 9" to
responses holding the word "yes" and "Score: 1" otherwise (so its grades depend on the
response, as a judge's must)."""

import random

import torch

RUBRIC = "Grade this: {response}"


def train_yes_no_judge(model, tokenizer, judge, steps=150):
    """Fine-tune a tiny model to reply 'Score: 9' to responses holding 'yes', else 'Score: 1'."""
    words = "the king queen sword love death night day rose".split()
    rng = random.Random(0)

    def example():
        verdict = rng.random() < 0.5
        response = " ".join(rng.sample(words, 3) + ["yes" if verdict else "no"])
        head = tokenizer.apply_chat_template(judge.prompt(response, {"prompt": "q"}),
                                             add_generation_prompt=True, tokenize=False,
                                             enable_thinking=False)  # fmt: skip
        target = f"Score: {9 if verdict else 1}<|im_end|>"
        return (tokenizer(head, add_special_tokens=False)["input_ids"],
                tokenizer(target, add_special_tokens=False)["input_ids"])  # fmt: skip

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        batch = [example() for _ in range(16)]
        width = max(len(h) + len(t) for h, t in batch)
        ids = torch.zeros((16, width), dtype=torch.long)
        labels = torch.full((16, width), -100)
        for i, (h, t) in enumerate(batch):
            ids[i, : len(h) + len(t)] = torch.tensor(h + t)
            labels[i, len(h) : len(h) + len(t)] = torch.tensor(t)
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def publish_yes_no_judge(out, tiny_model):
    """Train the judge from the tiny model and save it at `out` as a plain checkpoint
    directory (an outside input, as a user's own judge model would be)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmforge.data.tokenizer import copy_tokenizer_files
    from llmforge.gen import TransformersGenerator
    from llmforge.verifiers import build

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    gen = TransformersGenerator(model, tokenizer, template_kwargs={"enable_thinking": False})
    train_yes_no_judge(model, tokenizer, build("judge", generator=gen, rubric=RUBRIC))
    model.save_pretrained(str(out), safe_serialization=True)
    copy_tokenizer_files(tiny_model, out)
    return out
