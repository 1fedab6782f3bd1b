"""Reuse of inputs and references across a worker's trials: same results, made once, never shared."""
import pytest
import torch

from m2tune.inputs import make_inputs
from m2tune.kernel_variants.m2rnn.naive import m2rnn_reference
from m2tune.measure import validate
from m2tune.measure.validate import AUTO_CLIP, _chunk_states, validate_forward, validate_training
from m2tune.problem import Problem
from m2tune.reuse import Memo, memoized, reusing

P = Problem(B=3, S=9, K=6, V=4, Nv=2, Nw=2, Nf=2, h0=True, dtype="float32")


def fp32_candidate(corrupt=False):
    def run(problem, x, y, h_T, ckpt_every=0):
        if corrupt:              # a kernel storing out of bounds into its inputs
            x.q.mul_(100.0)
            x.v.zero_()
            if x.cu_seqlens is not None:
                x.cu_seqlens[1] += 1
        states, see = _chunk_states(problem, x, torch.float32, ckpt_every) if ckpt_every else (None, None)
        yr, hr = m2rnn_reference(x.q, x.k, x.v, x.W, x.f, x.h0, cu_seqlens=x.cu_seqlens, dtype=torch.float32,
                                 observe=see)
        y.copy_(yr)
        h_T.copy_(hr)
        return states
    return run


def fp32_training(x, clip, dy, dh_T):
    leaves = {n: t.detach().float().requires_grad_(True) for n, t in x.tensors().items() if n != "cu_seqlens"}
    y, h = m2rnn_reference(*(leaves.get(n) for n in ("q", "k", "v", "W", "f", "h0")),
                           cu_seqlens=x.cu_seqlens, gradient_clipping=clip)
    grads = torch.autograd.grad((y, h), list(leaves.values()), (dy.float(), dh_T.float()))
    return y.detach().to(x.q.dtype), h.detach(), dict(zip(leaves, grads))


def _errors(result):
    return [(c.case, c.name, c.length, c.e_cand, c.e_ref, c.limit) for c in result.checks]


def test_the_memo_hands_out_copies_and_makes_once():
    memo, made = Memo(), []

    def make():
        made.append(1)
        return {"t": torch.arange(4.0), "n": 3}
    first = memo.get("k", make)
    first["t"].zero_()
    second = memo.get("k", make)
    second["t"].add_(1)
    assert made == [1] and memo.hits == 1 and memo.misses == 1
    assert torch.equal(memo.get("k", make)["t"], torch.arange(4.0))


def test_the_memo_evicts_the_least_recently_used_past_its_bytes():
    memo = Memo(max_bytes=3 * 8 * 10)             # three tensors of ten float64
    for key in "abc":
        memo.get(key, lambda: torch.zeros(10, dtype=torch.float64))
    memo.get("a", lambda: pytest.fail("a was evicted"))
    memo.get("d", lambda: torch.zeros(10, dtype=torch.float64))
    assert len(memo) == 3 and memo.bytes == 240
    rebuilt = []
    memo.get("b", lambda: rebuilt.append(1) or torch.zeros(10, dtype=torch.float64))
    assert rebuilt == [1]                          # b, the oldest untouched, went first
    memo.get("huge", lambda: torch.zeros(100, dtype=torch.float64))
    assert "huge" not in memo._values and memo.bytes <= 240


def test_outside_reusing_nothing_is_kept():
    calls = []
    for _ in range(2):
        memoized("k", lambda: calls.append(1))
    assert calls == [1, 1]
    x = make_inputs(P, seed=4)
    x.q.zero_()
    assert make_inputs(P, seed=4).q.abs().sum() > 0


def test_reused_inputs_are_the_same_draw_and_a_private_copy():
    fresh = make_inputs(P, seed=5)
    with reusing() as memo:
        a = make_inputs(P, seed=5)
        a.q.zero_()
        b = make_inputs(P, seed=5)
        other = make_inputs(P, seed=6)
    assert memo.hits == 1 and memo.misses == 2
    for name, t in fresh.tensors().items():
        assert torch.equal(getattr(b, name), t), name
    assert not torch.equal(other.q, fresh.q)


def counted_reference(monkeypatch):
    calls = []

    def counting(*args, **kw):
        calls.append(1)
        return m2rnn_reference(*args, **kw)
    monkeypatch.setattr(validate, "m2rnn_reference", counting)
    return calls


# packed: cast() hands cu_seqlens on as is, so the candidate holds the memo's own unless it copies
@pytest.mark.parametrize("problem", [P, Problem.varlen([5, 9, 2], K=6, V=4, Nv=2, Nw=2, Nf=2, h0=True,
                                                       dtype="float32")], ids=["batch", "packed"])
def test_forward_validation_reused_gives_the_same_checks_and_survives_a_corrupting_candidate(problem, monkeypatch):
    alone = validate_forward(problem, fp32_candidate(), seed=3, ckpt_every=4)
    calls = counted_reference(monkeypatch)
    with reusing() as memo:
        bad = validate_forward(problem, fp32_candidate(corrupt=True), seed=3, ckpt_every=4)
        made = (memo.misses, len(calls))
        good = validate_forward(problem, fp32_candidate(), seed=3, ckpt_every=4)
    assert alone.ok and not bad.ok
    assert (memo.misses, len(calls)) == made and memo.hits > 0      # nothing made twice
    assert good.ok and _errors(good) == _errors(alone)


def test_training_validation_reused_gives_the_same_checks_and_notes(monkeypatch):
    alone = validate_training(P, fp32_training, seed=2, clip=AUTO_CLIP)
    with reusing() as memo:
        first = validate_training(P, fp32_training, seed=2, clip=AUTO_CLIP)
        made = memo.misses
        refs = counted_reference(monkeypatch)     # the candidate calls naive's own
        again = validate_training(P, fp32_training, seed=2, clip=AUTO_CLIP)
    assert alone.ok, alone.reason()
    assert memo.misses == made and memo.hits > 0 and refs == []
    assert _errors(first) == _errors(again) == _errors(alone)
    assert again.notes == alone.notes and any("gradient_clipping=" in n for n in again.notes)
