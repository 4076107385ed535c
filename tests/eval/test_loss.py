"""Loss and bits-per-byte: windowing covers every token once, numbers add up per domain."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from llmforge.data.tokens import TokenStore
from llmforge.errors import BadInput
from llmforge.eval import loss as losslib
from llmforge.eval.suite import load


@pytest.fixture(scope="module")
def model_and_tok(tiny_model):
    return load(tiny_model)


def test_windows_predict_every_token_but_the_first_once():
    chunks = losslib.windows(np.arange(10), seq_len=4)
    assert [c.tolist() for c in chunks] == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8], [8, 9]]
    assert sum(len(c) - 1 for c in chunks) == 9
    assert losslib.windows(np.arange(1), 4) == []


def test_sum_nll_matches_direct_cross_entropy(model_and_tok):
    model, _ = model_and_tok
    seq = np.arange(3, 40) % 200
    nats, count = losslib.sum_nll(model, [seq, seq[:7]], batch_size=2)
    ids = torch.as_tensor(seq)[None]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1]
        short = model(input_ids=ids[:, :7]).logits[0, :-1]
    want = torch.nn.functional.cross_entropy(
        logits, ids[0, 1:], reduction="sum"
    ) + torch.nn.functional.cross_entropy(short, ids[0, 1:7], reduction="sum")
    assert count == len(seq) - 1 + 6  # padding of the short row is not counted
    assert nats == pytest.approx(float(want), rel=1e-4)


def test_tokens_loss_per_domain(model_and_tok, tiny_tokens):
    model, tok = model_and_tok
    store = TokenStore(tiny_tokens, "val")
    cfg = losslib.LossConfig(seq_len=64, batch_size=4, max_tokens=500)
    per = losslib.tokens_loss(model, tok, store, cfg)
    assert set(per) == {"literature", "code", "math"}
    for domain, r in per.items():
        docs = [store.doc(i) for i in store.docs_in(domain)]
        used = min(sum(len(d) for d in docs), 500)
        assert r["tokens"] == used - 1
        assert 3.0 < r["loss"] < 9.0  # a random model: about ln(vocab) = 6.2 nats
        assert r["bpb"] == pytest.approx(r["loss"] * r["tokens"] / math.log(2) / r["bytes"])
    total = losslib.overall(per)
    assert total["tokens"] == sum(r["tokens"] for r in per.values())
    assert (
        min(r["loss"] for r in per.values())
        <= total["loss"]
        <= max(r["loss"] for r in per.values())
    )


def test_text_loss_counts_utf8_bytes(model_and_tok):
    model, tok = model_and_tok
    texts = {"prose": ["the king and the queen", "thou art fair"], "accents": ["café crème"]}
    per = losslib.text_loss(model, tok, texts, losslib.LossConfig(seq_len=16))
    assert per["prose"]["bytes"] == len("the king and the queen") + len("thou art fair")
    assert per["accents"]["bytes"] == len("café crème".encode())  # 12 bytes, 10 characters


def test_tokenizer_mismatch_is_bad_input(model_and_tok):
    model, tok = model_and_tok
    store = SimpleNamespace(vocab_size=100_000, root="elsewhere")
    with pytest.raises(BadInput, match="not made with the same tokenizer"):
        losslib.tokens_loss(model, tok, store, losslib.LossConfig())
