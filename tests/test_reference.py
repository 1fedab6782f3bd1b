"""The reference recurrence: the math of docs/design.md, head sharing, varlen, clipping."""
import torch

from m2tune.problem import Problem
from m2tune.kernel_variants.m2rnn.naive import m2rnn_reference
from m2tune.inputs import make_inputs


def test_two_steps_match_the_written_formula():
    p = Problem(B=1, S=2, K=3, V=2, h0=True, dtype="float64")
    x = make_inputs(p, seed=0)
    y, hT = m2rnn_reference(x.q, x.k, x.v, x.W, x.f, x.h0)
    H = x.h0[0, 0]
    for t in range(2):
        xt = torch.outer(x.k[0, t, 0], x.v[0, t, 0])
        z = torch.tanh(H @ x.W[0] + xt)
        H = x.f[0, t, 0] * H + (1 - x.f[0, t, 0]) * z
        torch.testing.assert_close(y[0, t, 0], x.q[0, t, 0] @ H)
    torch.testing.assert_close(hT[0, 0], H)


def test_shared_heads_equal_explicitly_repeated_heads():
    p = Problem(B=2, S=4, K=4, V=3, Nq=1, Nk=2, Nv=4, Nw=2, Nf=4, h0=True, dtype="float64")
    x = make_inputs(p, seed=1)
    y, hT = m2rnn_reference(x.q, x.k, x.v, x.W, x.f, x.h0)
    rep = lambda t, d: t.repeat_interleave(4 // t.shape[d], dim=d)  # noqa: E731
    y2, hT2 = m2rnn_reference(rep(x.q, 2), rep(x.k, 2), x.v, rep(x.W, 0), x.f, x.h0)
    torch.testing.assert_close(y, y2)
    torch.testing.assert_close(hT, hT2)
    # head 1 of k is shared by heads 2 and 3, not 1 and 3
    assert not torch.allclose(y[:, :, 1], y2[:, :, 1] * 0)


def test_varlen_equals_separate_sequences():
    p = Problem.varlen([3, 5, 1], K=4, V=3, Nv=2, Nw=2, Nf=2, h0=True, dtype="float64")
    x = make_inputs(p, seed=2)
    y, hT = m2rnn_reference(x.q, x.k, x.v, x.W, x.f, x.h0, cu_seqlens=x.cu_seqlens)
    start = 0
    for i, n in enumerate(p.seqlens):
        sl = slice(start, start + n)
        yi, hi = m2rnn_reference(x.q[:, sl], x.k[:, sl], x.v[:, sl], x.W, x.f[:, sl], x.h0[i:i + 1])
        torch.testing.assert_close(y[:, sl], yi)
        torch.testing.assert_close(hT[i:i + 1], hi)
        start += n


def test_gradient_clipping_clamps_each_state_gradient():
    """One step: dH_1 = clamp(q dyᵀ + dh_T); dh0 = f·dH_1 + ((1-f)(1-z²)·dH_1) Wᵀ."""
    p = Problem(B=1, S=1, K=4, V=3, h0=True, dtype="float64")
    x = make_inputs(p, seed=3)
    h0 = x.h0.clone().requires_grad_(True)
    y, hT = m2rnn_reference(x.q, x.k, x.v, x.W, x.f, h0, gradient_clipping=0.05)
    dy, dhT = torch.randn_like(y), torch.randn_like(hT)
    torch.autograd.backward([y, hT], [dy, dhT])
    q, f, W = x.q[0, 0, 0], x.f[0, 0, 0], x.W[0]
    z = torch.tanh(x.h0[0, 0] @ W + torch.outer(x.k[0, 0, 0], x.v[0, 0, 0]))
    dH = (torch.outer(q, dy[0, 0, 0]) + dhT[0, 0]).clamp(-0.05, 0.05)
    assert (dH.abs() == 0.05).any(), "clipping must bite in this test"
    expected = f * dH + ((1 - f) * (1 - z**2) * dH) @ W.T
    torch.testing.assert_close(h0.grad[0, 0], expected)


def test_no_clipping_when_bound_is_large():
    p = Problem(B=1, S=6, K=4, V=3, h0=True, dtype="float64")
    x = make_inputs(p, seed=4)
    grads = []
    for clip in (None, 1e9):
        W = x.W.clone().requires_grad_(True)
        y, _ = m2rnn_reference(x.q, x.k, x.v, W, x.f, x.h0, gradient_clipping=clip)
        y.sum().backward()
        grads.append(W.grad)
    torch.testing.assert_close(*grads)
