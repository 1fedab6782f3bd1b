"""Plain PyTorch M²RNN recurrence (the naive reference): the ground truth every kernel is checked against.

Written for clarity, not speed (one Python step per time step). It runs in
any dtype, float64 included, is differentiable through autograd, and applies
`gradient_clipping` exactly where the kernels must: the total gradient of
every state H_t (t = 1..S, h_T included) is clamped to [-c, c] before it
flows further back. The gradient of h0 is not clamped (h0 is an input, not a step).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from m2tune.inputs import Inputs, problem_of


def _expand(x: torch.Tensor, N: int, dim: int) -> torch.Tensor:
    """Heads n*g .. n*g+g-1 share head n of x (g = N // heads of x)."""
    return x.repeat_interleave(N // x.shape[dim], dim=dim)


# observe(t, h): called with the state after step t (0-based) of one sequence, before its
# gradient clamp is attached: a hook it registers on h sees the unclamped gradient.
Observer = Callable[[int, torch.Tensor], None]


def _one_sequence(q, k, v, W, f, h, clip: Optional[float], observe: Optional[Observer] = None):
    """q,k (B,S,N,K), v (B,S,N,V), W (N,V,V), f (B,S,N), h (B,N,K,V) -> y (B,S,N,V), h_T."""
    ys = []
    for t in range(q.shape[1]):
        x = k[:, t, :, :, None] * v[:, t, :, None, :]            # (B,N,K,V) state expansion
        z = torch.tanh(torch.matmul(h, W) + x)                    # (B,N,K,V) @ (N,V,V)
        ft = f[:, t, :, None, None]
        h = ft * h + (1 - ft) * z
        if observe is not None:
            observe(t, h)
        if clip is not None and h.requires_grad:
            h.register_hook(lambda g, c=clip: g.clamp(-c, c))
        ys.append(torch.einsum("bnk,bnkv->bnv", q[:, t], h))
    return torch.stack(ys, dim=1), h


def m2rnn_reference(q, k, v, W, f, h0=None, *, cu_seqlens=None, gradient_clipping=None,
                    dtype: Optional[torch.dtype] = None,
                    observe: Optional[Callable[[int, int, torch.Tensor], None]] = None):
    """Return (y, h_T): y like v with N heads, h_T (num_seqs, N, K, V).

    Computes in `dtype` (default: the inputs' dtype); every input, h0 included,
    is cast to it first, so the result shows the rounding of an honest
    implementation at that precision.
    observe(seq, t, h): every state as it is made (seq: the packed sequence, or None for all of
    an unpacked batch at once); the validator reads checkpoints and state gradients through it.
    """
    x = Inputs(q, k, v, W, f, h0, cu_seqlens)
    p = problem_of(x)
    dt = dtype or q.dtype
    N = p.N
    q, k, v, f = (_expand(t.to(dt), N, 2) for t in (q, k, v, f))
    W = _expand(W.to(dt), N, 0)
    clip = None if gradient_clipping is None else float(gradient_clipping)
    if h0 is None:
        h0 = torch.zeros(p.B, N, p.K, p.V, dtype=dt, device=q.device)
    h0 = h0.to(dt)

    def seen(seq):
        return None if observe is None else (lambda t, h: observe(seq, t, h))

    if cu_seqlens is None:
        return _one_sequence(q, k, v, W, f, h0, clip, seen(None))

    ys, hs = [], []
    start = 0
    for i, n in enumerate(p.seqlens):
        sl = slice(start, start + n)
        y, h = _one_sequence(q[:, sl], k[:, sl], v[:, sl], W, f[:, sl], h0[i:i + 1], clip, seen(i))
        ys.append(y)
        hs.append(h)
        start += n
    return torch.cat(ys, dim=1), torch.cat(hs, dim=0)
