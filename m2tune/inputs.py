"""Input tensors of one M²RNN call: checks with clear errors, the Problem they describe, and
fresh realistic inputs for a Problem (what validation, timing and tests run on).

Every error names the tensor, what was expected and what was given, so a
shape bug in a training script is found from the message alone.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional

import torch

from .problem import Problem
from .reuse import memoized

_FLOATS = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16",
           torch.float64: "float64"}
TORCH_DTYPES = {name: dtype for dtype, name in _FLOATS.items()}


class InputError(ValueError):
    """A tensor passed to m2rnn has the wrong shape, dtype, device or content."""


class InputTypeError(InputError, TypeError):
    """An argument passed to m2rnn is not a tensor at all (a TypeError, and still an InputError)."""


@dataclass
class Inputs:
    q: torch.Tensor          # (B, S, Nq, K)   varlen: (1, T, Nq, K)
    k: torch.Tensor          # (B, S, Nk, K)
    v: torch.Tensor          # (B, S, Nv, V)
    W: torch.Tensor          # (Nw, V, V)
    f: torch.Tensor          # (B, S, Nf)      forget gate in (0, 1)
    h0: Optional[torch.Tensor] = None        # (B, N, K, V)  varlen: (num_seqs, N, K, V)
    cu_seqlens: Optional[torch.Tensor] = None  # (num_seqs + 1,) int, starts at 0, increasing

    def tensors(self) -> dict[str, torch.Tensor]:
        return {n: t for n, t in vars(self).items() if t is not None}


def _fail(name: str, expected: str, actual: object) -> InputError:
    return InputError(f"m2rnn: `{name}` expected {expected}, got {actual}")


def check_tensor(name: str, t: object, layout: str) -> None:
    """A TypeError naming the argument when `t` is not a tensor (a list, a numpy array, ...)."""
    if not isinstance(t, torch.Tensor):
        raise InputTypeError(f"m2rnn: `{name}` expected a torch.Tensor {layout}, got {type(t).__name__}")


def _rank(name: str, t: torch.Tensor, rank: int, layout: str, hint: str = "") -> None:
    check_tensor(name, t, layout)
    if t.dim() != rank:
        raise _fail(name, f"{rank} dims {layout}", f"shape {tuple(t.shape)}{hint}")


def _dim(name: str, t: torch.Tensor, axis: int, what: str, want: int) -> None:
    if t.shape[axis] != want:
        raise _fail(name, f"{what}={want} at dim {axis}", f"shape {tuple(t.shape)}")


PACKED = {"q": (3, "(T, Nq, K)"), "k": (3, "(T, Nk, K)"), "v": (3, "(T, Nv, V)"), "f": (2, "(T, Nf)")}


def batch_packed(q, k, v, f, cu_seqlens) -> tuple[tuple, bool]:
    """Packed sequences in the (T, N, ...) layout (the authors' library, flash-linear-attention) as
    the (1, T, N, ...) one the kernels take: ((q, k, v, f), True) when they came as (T, ...), else
    the tensors unchanged and False. A view, so gradients flow back in the caller's layout."""
    if cu_seqlens is None or not isinstance(q, torch.Tensor) or q.dim() != 3:
        return (q, k, v, f), False
    for name, t in (("k", k), ("v", v), ("f", f)):
        rank, layout = PACKED[name]
        _rank(name, t, rank, f"{layout}, packed as q {tuple(q.shape)}")
    return (q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), f.unsqueeze(0)), True


def seqlens_of(cu: torch.Tensor, T: int) -> tuple[int, ...]:
    """Lengths of the packed sequences that cu_seqlens marks on a time axis of T steps (checked)."""
    if not isinstance(cu, torch.Tensor) or cu.dim() != 1 or cu.numel() < 2:
        raise _fail("cu_seqlens", "a 1-d tensor of num_seqs + 1 offsets",
                    f"{type(cu).__name__} {tuple(getattr(cu, 'shape', ()))}")
    if cu.dtype not in (torch.int32, torch.int64):
        raise _fail("cu_seqlens", "dtype int32 or int64", cu.dtype)
    offsets = [int(x) for x in cu.tolist()]
    if offsets[0] != 0:
        raise _fail("cu_seqlens", "to start at 0", f"{offsets[0]}")
    lens = [b - a for a, b in zip(offsets, offsets[1:])]
    if any(n <= 0 for n in lens):
        bad = next(i for i, n in enumerate(lens) if n <= 0)
        raise _fail("cu_seqlens", "strictly increasing offsets",
                    f"cu_seqlens[{bad}]={offsets[bad]} >= cu_seqlens[{bad + 1}]={offsets[bad + 1]}")
    if offsets[-1] != T:
        raise _fail("cu_seqlens", f"to end at the packed length T={T}", f"{offsets[-1]}")
    return tuple(lens)


def unread_seqlens(cu: torch.Tensor, T: int, max_seqlen: int) -> tuple[int, ...]:
    """Packed lengths with the sizes the kernels take (count, sum T, longest at most max_seqlen),
    without reading cu_seqlens: inside the op of a captured call (CUDA graphs) no host read is
    allowed, and the kernels read every sequence's bounds from cu_seqlens on the device. The eager
    call checked the real offsets before (seqlens_of); the longest is max_seqlen, capped where T
    leaves each other sequence one step."""
    n = cu.shape[0] - 1
    longest = max(1, min(max_seqlen, T - (n - 1)))
    rest, lens = T - longest, [longest]
    for i in range(n - 1):
        share = max(1, min(longest, rest - (n - 2 - i)))
        lens.append(share)
        rest -= share
    return tuple(lens)


def _check_heads(heads: dict[str, int]) -> int:
    """N, the largest head count, which every other count must divide. When one tensor alone holds
    the largest count and the others do not divide it, that tensor is the odd one out and is named."""
    N = max(heads.values())
    wrong = [name for name, n in heads.items() if N % n]
    if not wrong:
        return N
    holders = [name for name, n in heads.items() if n == N]
    others = ", ".join(f"{name}: {n}" for name, n in heads.items() if n != N)
    if len(holders) == 1:
        raise _fail(holders[0], f"a head count that the other head counts divide ({others})", N)
    name = wrong[0]
    raise _fail(name, f"a head count dividing N={N} (the head count of {', '.join(holders)})", heads[name])


def problem_of(x: Inputs, max_seqlen: int = 0) -> Problem:
    """Check every tensor against the others and return the Problem they form."""
    check_tensor("q", x.q, "(B, S, Nq, K)")
    hint = (" (packed sequences: pass cu_seqlens, with q as (T, Nq, K) or (1, T, Nq, K))"
            if x.cu_seqlens is None and x.q.dim() == 3 else "")
    _rank("q", x.q, 4, "(B, S, Nq, K)", hint)
    B, S, Nq, K = x.q.shape
    _rank("k", x.k, 4, "(B, S, Nk, K)")
    _rank("v", x.v, 4, "(B, S, Nv, V)")
    _rank("W", x.W, 3, "(Nw, V, V)")
    _rank("f", x.f, 3, "(B, S, Nf)")
    for name, t in (("k", x.k), ("v", x.v), ("f", x.f)):
        _dim(name, t, 0, "B (as q)", B)
        _dim(name, t, 1, "S (as q)", S)
    _dim("k", x.k, 3, "K (as q)", K)
    V = x.v.shape[3]
    _dim("W", x.W, 1, "V (as v)", V)
    _dim("W", x.W, 2, "V (as v)", V)
    Nk, Nv, Nw, Nf = x.k.shape[2], x.v.shape[2], x.W.shape[0], x.f.shape[2]
    if min(B, S, Nq, K, Nk, V, Nv, Nw, Nf) == 0:
        raise _fail("q", "no empty dimension", f"q {tuple(x.q.shape)}, v {tuple(x.v.shape)}, "
                    f"W {tuple(x.W.shape)}, f {tuple(x.f.shape)}")
    heads = {"q": Nq, "k": Nk, "v": Nv, "W": Nw, "f": Nf}
    N = _check_heads(heads)

    dtype = x.q.dtype
    if dtype not in _FLOATS:
        raise _fail("q", f"dtype in {[str(d) for d in _FLOATS]}", dtype)
    device = x.q.device
    for name, t in (("k", x.k), ("v", x.v), ("W", x.W), ("f", x.f)):
        if t.dtype != dtype:
            raise _fail(name, f"dtype {dtype} (as q)", t.dtype)
        if t.device != device:
            raise _fail(name, f"device {device} (as q)", t.device)

    seqlens = None
    if x.cu_seqlens is not None:
        if B != 1:
            raise _fail("q", "batch size 1 with cu_seqlens (packed sequences, FLA convention)",
                        f"shape {tuple(x.q.shape)}")
        if x.cu_seqlens.device != device:
            raise _fail("cu_seqlens", f"device {device} (as q)", x.cu_seqlens.device)
        seqlens = unread_seqlens(x.cu_seqlens, S, max_seqlen) if max_seqlen else seqlens_of(x.cu_seqlens, S)
    nseq = len(seqlens) if seqlens is not None else B

    if x.h0 is not None:
        _rank("h0", x.h0, 4, "(B, N, K, V)")
        want = (nseq, N, K, V)
        if tuple(x.h0.shape) != want:
            source = ", ".join(n for n, c in heads.items() if c == N)
            raise _fail("h0", f"shape {want} (num sequences, N, K, V; N={N}, the head count of {source})",
                        f"shape {tuple(x.h0.shape)}")
        if x.h0.dtype not in _FLOATS:
            raise _fail("h0", f"a float dtype in {[str(d) for d in _FLOATS]}", x.h0.dtype)
        if x.h0.device != device:
            raise _fail("h0", f"device {device} (as q)", x.h0.device)

    common = dict(K=K, V=V, Nq=Nq, Nk=Nk, Nv=Nv, Nw=Nw, Nf=Nf, dtype=_FLOATS[dtype],
                  h0=x.h0 is not None)
    if seqlens is not None:
        return Problem.varlen(seqlens, **common)
    return Problem(B=B, S=S, **common)


def make_inputs(problem: Problem, *, seed: int, device: str | torch.device = "cpu") -> Inputs:
    """Realistic training-like inputs in float64 (cast per use): never zeros.

    q, k ~ N(0,1)/sqrt(K); v ~ N(0,1); W = I + N(0, 0.1²/V) (near identity);
    f = sigmoid(N(0,1) + 1) (mostly remembering); h0 ~ N(0, 0.1²).
    Drawn on the CPU (the same values on every device), so each draw is kept inside
    reuse.reusing(): a tuning worker draws the same ones for every trial.
    """
    return memoized(("inputs", problem, seed, str(torch.device(device))),
                    lambda: _draw_inputs(problem, seed, device))


def _draw_inputs(problem: Problem, seed: int, device: str | torch.device) -> Inputs:
    g = torch.Generator(device="cpu").manual_seed(seed)
    p = problem
    rows, T = (1, p.tokens) if p.is_varlen else (p.B, p.S)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    q = randn(rows, T, p.Nq, p.K) / p.K ** 0.5
    k = randn(rows, T, p.Nk, p.K) / p.K ** 0.5
    v = randn(rows, T, p.Nv, p.V)
    W = torch.eye(p.V, dtype=torch.float64) + 0.1 * randn(p.Nw, p.V, p.V) / p.V ** 0.5
    f = torch.sigmoid(randn(rows, T, p.Nf) + 1.0)
    h0 = 0.1 * randn(p.B, p.N, p.K, p.V) if p.h0 else None
    cu = None
    if p.is_varlen:
        cu = torch.tensor([0, *itertools.accumulate(p.seqlens)], dtype=torch.int32)
    x = Inputs(q, k, v, W, f, h0, cu)
    return Inputs(**{n: (t.to(device) if t is not None else None) for n, t in vars(x).items()})


def cast(x: Inputs, dtype: torch.dtype, state: torch.dtype = torch.float32) -> Inputs:
    """Inputs in dtype, h0 in `state` (kernels take an fp32 state), cu_seqlens as is."""
    return Inputs(*(t.to(dtype) for t in (x.q, x.k, x.v, x.W, x.f)),
                  x.h0.to(state) if x.h0 is not None else None, x.cu_seqlens)
