"""The packed loader: packing and doc ids, mixture shares, stages, the global order over
ranks, resume state (also on another number of ranks)."""

import numpy as np
import pytest
import torch

from llmforge.data.batch_plan import BatchPlan
from llmforge.data.labelled_tokens import EOS, domain_of_token, make_tokens
from llmforge.data.loader import (
    PackedLoader,
    RowPacker,
    Source,
    fill_row,
    grad_accum_for,
    to_batch,
    validation_batches,
)
from llmforge.data.tokens import TokenStore
from llmforge.errors import BadInput


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = make_tokens(tmp_path_factory.mktemp("tok"), {"a": 60, "b": 40, "c": 30})
    return TokenStore(root, "train")


def loader(store, weights, ends=(1000,), **kw):
    w = [np.asarray(x, dtype=float) / sum(x) for x in weights]
    return PackedLoader(
        Source([store]),
        w,
        list(ends),
        batch_size=kw.pop("batch_size", 4),
        seq_len=kw.pop("seq_len", 32),
        **kw,
    )


def test_rows_pack_whole_documents_with_doc_ids_and_masked_boundaries(store):
    batch = loader(store, [[1, 1, 1]]).next_batch()
    x, y, docs = batch.inputs, batch.targets, batch.doc_ids
    assert x.shape == y.shape == docs.shape == (4, 32)
    for r in range(4):
        for t in range(31):
            if docs[r, t] == docs[r, t + 1]:
                assert y[r, t] == x[r, t + 1]  # targets are the next token of the same doc
        # a target is ignored exactly where the next token starts another document
        crossing = docs[r, 1:] != docs[r, :-1]
        assert torch.all(y[r, :-1][crossing] == -100)
        # within a document every token is the same id (until eos), so ids never mix docs
        for d in docs[r].unique():
            toks = x[r][(docs[r] == d) & (x[r] != EOS)]
            assert toks.unique().numel() <= 1


def test_documents_cut_at_a_row_end_continue_in_the_next_row(store):
    docs = iter(store.docs_in("a"))
    packer = RowPacker(lambda: (i := int(next(docs)), store.length(i), 0), 9)
    rows = [fill_row(packer.plan(), 9, EOS, store.doc) for _ in range(20)]
    stream = np.concatenate([r[0] for r in rows])
    expected = np.concatenate([store.doc(int(i)) for i in store.docs_in("a")])[: len(stream)]
    np.testing.assert_array_equal(stream, expected)  # nothing dropped, nothing reordered
    assert all(r[3] == 9 for r in rows)


def test_mixture_weights_drive_the_domain_shares(store):
    ld = loader(store, [[0.7, 0.1, 0.2]], batch_size=8, seq_len=64)
    for _ in range(40):
        ld.next_batch()
    shares = ld.shares()
    # documents have similar length distributions, so token shares follow the weights
    assert shares["a"] == pytest.approx(0.7, abs=0.06)
    assert shares["b"] == pytest.approx(0.1, abs=0.05)
    assert shares["c"] == pytest.approx(0.2, abs=0.05)


def test_stages_switch_mixture_at_their_step(store):
    ld = loader(store, [[1, 0, 0], [0, 0, 1]], ends=(3, 6), grad_accum=2, batch_size=2)
    domains = []
    for _ in range(12):
        b = ld.next_batch()
        domains.append(set(domain_of_token(int(t)) for t in b.inputs[b.inputs != EOS]))
    assert all(d <= {0} for d in domains[:6])  # steps 0-2: only domain a (carry aside)
    assert all(d <= {2} for d in domains[7:])  # from step 3 (after one carried doc): only c


def test_same_seed_same_batches_other_rank_other_batches(store):
    a = loader(store, [[1, 1, 1]], seed=3).next_batch().inputs
    b = loader(store, [[1, 1, 1]], seed=3).next_batch().inputs
    other = loader(store, [[1, 1, 1]], seed=3, rank=1, world_size=2).next_batch().inputs
    assert torch.equal(a, b)
    assert not torch.equal(a, other)


def test_state_dict_resumes_the_exact_stream(store):
    ld = loader(store, [[0.5, 0.3, 0.2]], buffer_docs=4)
    for _ in range(25):  # past an epoch of domain c, so the permuted order is exercised
        ld.next_batch()
    state = ld.state_dict()
    expected = [ld.next_batch() for _ in range(5)]
    fresh = loader(store, [[0.5, 0.3, 0.2]], buffer_docs=4)
    fresh.load_state_dict(state)
    for want in expected:
        got = fresh.next_batch()
        assert all(torch.equal(w, g) for w, g in zip(want, got))


def test_validation_batches_are_fixed_and_padding_is_ignored(store):
    val = TokenStore(store.root, "val")
    batches = validation_batches(val, "b", batch_size=4, seq_len=64, max_batches=3)
    assert len(batches) == 1  # 3 short documents fit in one row
    b = batches[0]
    assert b.inputs.shape[0] == 1
    n_tokens = int(val.lengths[val.docs_in("b")].sum())
    assert int((b.domains[0] >= 0).sum()) == min(n_tokens, 64)
    assert torch.all(b.targets[0, n_tokens:] == -100)


def test_to_batch_marks_padding_as_its_own_document():
    tokens = np.array([5, 5, 0, 7, 0, 0])
    docs = np.array([0, 0, 0, 1, -1, -1])
    batch = to_batch([(tokens, docs, np.zeros(6, dtype=np.int64), 4)])
    assert batch.doc_ids.tolist() == [[0, 0, 0, 1, 2]]
    assert batch.targets.tolist() == [[5, 0, -100, -100, -100]]


def global_rows(loaders, steps: int) -> list[torch.Tensor]:
    """Each step's rows in global order: micro-batch by micro-batch, rank by rank."""
    out = []
    for _ in range(steps):
        for _ in range(loaders[0].micro_batches()):
            out.extend(ld.next_batch().inputs for ld in loaders)
    return out


def test_the_global_order_is_the_same_on_any_number_of_ranks(store):
    weights = [[0.5, 0.3, 0.2]]
    two = [loader(store, weights, seed=1, batch_size=2, rank=r, world_size=2) for r in (0, 1)]
    one = [loader(store, weights, seed=1, batch_size=2, grad_accum=2)]
    four = [loader(store, weights, seed=1, batch_size=1, rank=r, world_size=4) for r in range(4)]
    a, b = torch.cat(global_rows(two, 6)), torch.cat(global_rows(one, 6))
    assert torch.equal(a, b)
    assert torch.equal(a, torch.cat(global_rows(four, 6)))
    assert two[0].shares() == one[0].shares()  # shares count every rank's rows


def test_a_position_saved_on_two_ranks_resumes_on_one(store):
    weights = [[0.4, 0.4, 0.2]]
    two = [
        loader(store, weights, batch_size=2, rank=r, world_size=2, buffer_docs=4) for r in (0, 1)
    ]
    global_rows(two, 7)
    state = two[0].state_dict()
    assert state == two[1].state_dict()  # the position is global: one copy serves every rank
    expected = torch.cat(global_rows(two, 3))
    accum = grad_accum_for(state["global_batch_rows"], batch_size=2, world_size=1)
    one = loader(store, weights, batch_size=2, grad_accum=accum, buffer_docs=4)
    one.load_state_dict(state)
    assert torch.equal(torch.cat(global_rows([one], 3)), expected)


def test_a_global_batch_that_cannot_be_kept_is_refused_with_the_numbers():
    assert grad_accum_for(16, batch_size=4, world_size=2) == 2
    with pytest.raises(BadInput, match=r"global batch is 8 rows.*4 x 3 ranks = 12.*\[1, 2\]"):
        grad_accum_for(8, batch_size=4, world_size=3)


WARMUP = BatchPlan(full=8, seq_len=32, phases=((3, 2), (2, 4)))  # rows: 2, 2, 2, 4, 4, 8...


def test_a_batch_warmup_takes_the_plans_rows_per_step_on_any_number_of_ranks(store):
    weights = [[0.5, 0.3, 0.2]]
    one = loader(store, weights, batch_size=2, plan=WARMUP)
    two = [loader(store, weights, batch_size=1, rank=r, world_size=2, plan=WARMUP) for r in (0, 1)]
    calls = []
    for _ in range(7):
        calls.append((one.micro_batches(), two[0].micro_batches()))
        global_rows([one], 1)
        global_rows(two, 1)
    assert calls == [(1, 1)] * 3 + [(2, 2)] * 2 + [(4, 4)] * 2  # micro-batches of each rank
    assert one.rows == two[0].rows == WARMUP.rows_before(7) == 30
    fresh = [loader(store, weights, batch_size=2, plan=WARMUP)]
    again = [
        loader(store, weights, batch_size=1, rank=r, world_size=2, plan=WARMUP) for r in (0, 1)
    ]
    assert torch.equal(torch.cat(global_rows(fresh, 7)), torch.cat(global_rows(again, 7)))


def test_a_position_saved_in_the_warmup_on_two_ranks_resumes_on_one(store):
    weights = [[0.4, 0.4, 0.2]]
    two = [loader(store, weights, batch_size=1, rank=r, world_size=2, buffer_docs=4, plan=WARMUP)
           for r in (0, 1)]  # fmt: skip
    global_rows(two, 4)  # three 2-row steps and one 4-row step: in the middle of the warmup
    state = two[0].state_dict()
    assert BatchPlan.from_state(state["batch_plan"]) == WARMUP
    expected = torch.cat(global_rows(two, 3))  # 4 + 8 + 8 rows
    one = loader(store, weights, batch_size=1, buffer_docs=4, plan=WARMUP)
    one.load_state_dict(state)
    assert one.data_step == 4 and one.micro_batches() == 4
    assert torch.equal(torch.cat(global_rows([one], 3)), expected)
    other = loader(store, weights, batch_size=1, buffer_docs=4, grad_accum=8)  # no warmup
    with pytest.raises(BadInput, match="batch plan"):
        other.load_state_dict(state)
