"""The PTX loss during RL (Kimi K2): pretraining cross-entropy on a curated tokens artifact.

Each optimizer step of rlvr adds `ptx.weight` x the next-token loss of `ptx.batch_size`
packed rows of `ptx.seq_len` tokens to the policy-gradient loss, so RL does not wash out
what the curated data holds. The rows come from the pretrain loader (`PackedLoader`) over
the artifact's `train` split, domains mixed by their natural token shares; documents see
each other within a row (plain causal attention, as a stock transformers model is called),
with eos between them. The loader's position is a small JSON state that goes into every
RL checkpoint, so a resumed run reads the rows an uninterrupted one would.

The loss is llmforge's chunked linear cross-entropy (`post.sft.fused_causal_lm_loss`), so
a long PTX row never materialises its [seq_len, vocab] logits. The held-out loss on the
`val` split (when the artifact has one) is logged every `ptx.eval_every` steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from llmforge import distributed
from llmforge.data.loader import Batch, PackedLoader, Source, validation_batches
from llmforge.data.tokens import TokenStore
from llmforge.errors import BadInput
from llmforge.post.rl_options import PTXArgs

ENDLESS = 1 << 62  # the PTX stream has one mixture stage that never ends


class PTXStream:
    """PTX rows of one tokens artifact, the weighted loss on them and their data position."""

    def __init__(self, path: Path, args: PTXArgs, seed: int, model, tokenizer=None):
        self.path, self.args = Path(path), args
        store = TokenStore(self.path, "train")
        check_vocab(store, model, tokenizer)
        shares = np.array([store.domain_tokens()[d] for d in store.domains], dtype=np.float64)
        self.loader = PackedLoader(
            Source([store]), [shares / shares.sum()], [ENDLESS], args.batch_size, args.seq_len,
            buffer_docs=args.buffer_docs, seed=seed, intra_doc_mask=False,
        )  # fmt: skip
        self.heldout = heldout_batches(self.path, args)

    def backward(self, model, micro_batch: int) -> dict:
        """Add d(weight x PTX loss)/d(params) to the gradients; the loss before the step."""
        batch = self.loader.next_batch()
        rows = batch.inputs.shape[0]
        counts = (batch.targets != -100).sum().clamp(min=1)
        total = 0.0
        for start in range(0, rows, micro_batch):
            part = slice(start, min(start + micro_batch, rows))
            nll = summed_nll(model, batch, part)
            (self.args.weight * nll / counts).backward()
            total += nll.item()
        return {"ptx/loss": total / counts.item(), "ptx/weight": self.args.weight}

    @torch.no_grad()
    def heldout_loss(self, model) -> float | None:
        """Mean next-token loss over the held-out rows (None without a val split)."""
        if not self.heldout:
            return None
        was_training = model.training
        model.eval()
        try:
            nats = sum(summed_nll(model, b, slice(None)).item() for b in self.heldout)
        finally:
            model.train(was_training)
        return nats / sum(int((b.targets != -100).sum()) for b in self.heldout)

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)


def summed_nll(model, batch: Batch, rows: slice) -> torch.Tensor:
    """Summed next-token loss (nats) of some rows of a packed batch.

    `fused_causal_lm_loss` shifts labels itself, so the inputs get one more position whose
    own prediction is ignored (its token is never a target) and the labels are the targets
    one place to the right.
    """
    from llmforge.post.sft import fused_causal_lm_loss

    inputs, targets = batch.inputs[rows], batch.targets[rows]
    dev = distributed.model_device(model)
    ids = torch.cat([inputs, inputs[:, -1:]], dim=1).to(dev)
    labels = torch.cat([torch.full_like(targets[:, :1], -100), targets], dim=1).to(dev)
    count = int((targets != -100).sum())
    return fused_causal_lm_loss(model, {"input_ids": ids, "labels": labels}) * max(count, 1)


def heldout_batches(path: Path, args: PTXArgs) -> list[Batch]:
    """Fixed rows of every domain of the val split; none when the artifact has no val split."""
    try:
        store = TokenStore(path, "val")
    except BadInput:
        return []
    batches = []
    for domain in store.domains:
        if len(store.docs_in(domain)):
            batches += validation_batches(store, domain, args.batch_size, args.seq_len,
                                          args.val_batches, mask=False)  # fmt: skip
    return batches


def check_vocab(store: TokenStore, model, tokenizer=None) -> None:
    """The PTX tokens must come from the policy's tokenizer: same vocabulary, ids the
    embedding has rows for. BadInput otherwise, naming the input."""
    rows = model.get_input_embeddings().num_embeddings
    if store.vocab_size > rows:
        raise BadInput(f"ptx: the tokens have a vocabulary of {store.vocab_size}, the policy's "
                       f"embedding only {rows} rows", path=str(store.root))  # fmt: skip
    own = store.root / "tokenizer" / "tokenizer.json"
    if tokenizer is None or not own.is_file():
        return
    from llmforge.data.tokenizer import load_tokenizer_json

    if load_tokenizer_json(own, add_missing=False).get_vocab() != tokenizer.get_vocab():
        raise BadInput("ptx: the tokens were made with another tokenizer than the policy's; "
                       "tokenize the PTX data with the policy's tokenizer", path=str(own))  # fmt: skip
