"""`M2RNN`: the M²RNN layer as a training recipe uses it, built on the `m2rnn` op.

    x ─► in_proj ─► [q | k | v | a | g]
    q, k, v ─► depthwise causal conv1d (kernel 4) + SiLU        (use_conv)
    q, k ─► scaled by 1/sqrt(K)
    a ─► forget gate f in (0, 1), one scalar per forget head
    y, h_T = m2rnn(q, k, v, W, f, h0)                             (W: (Nw, V, V), starts at identity)
    y += D * v                                                    (use_residual, D per head)
    out = out_proj(RMSNorm_per_head(y) * SiLU(g))

Choices, stated once:
- q and k are each multiplied by 1/sqrt(K) (no L2 normalisation).
- Forget gate: "sigmoid": f = sigmoid(a); "softplus": f = exp(-softplus(a) * exp(A_log)) with a
  learned per-forget-head A_log, initialised to 0 (decay rate 1, f = 0.5 at a = 0).
- Output: norm then gate. RMSNorm over V within each state head (fp32 statistics, learned weight of
  N*V, initialised to 1), multiplied by SiLU(g).
- Residual: y[n] += D[n] * v[n // (N // Nv)] using v after conv + SiLU; D (N,) initialised to 1.
- The conv has a bias only when `bias=True` (as the two Linears). Weights use PyTorch's defaults.
- The recurrent state h is fp32; the conv state keeps the last 3 conv inputs (before the conv),
  layout (num_seqs, conv channels, 3) with the newest input last, channels ordered [q | k | v].

Packed sequences: x (1, T, hidden) with cu_seqlens (num_seqs + 1,); the conv never reads across a
boundary and the state holds one row per sequence. Generation: feeding tokens one at a time with the
returned state gives the full-sequence output.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .inputs import seqlens_of

CONV_WIDTH = 4


class M2RNNState(NamedTuple):
    """Recurrent state of one M2RNN layer: one row per sequence (batch element or packed sequence)."""
    h: torch.Tensor                      # (num_seqs, N, K, V) float32
    conv: Optional[torch.Tensor] = None  # (num_seqs, conv channels, 3); None when use_conv=False


def _heads_ok(name: str, n: int, N: int) -> None:
    if n <= 0 or N % n:
        raise ValueError(f"M2RNN: `{name}`={n} must be a positive divisor of num_heads={N}")


class M2RNN(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, head_k: int, head_v: int, *,
                 num_q_heads: int = 1, num_k_heads: int = 1, num_v_heads: Optional[int] = None,
                 num_f_heads: Optional[int] = None, num_w_heads: Optional[int] = None,
                 forget_gate: str = "sigmoid", use_conv: bool = True, use_residual: bool = True,
                 gradient_clipping: Optional[float] = None, norm_eps: float = 1e-6, bias: bool = False,
                 kernel_config: Optional[Mapping[str, Any]] = None, device=None, dtype=None):
        super().__init__()
        N = num_heads
        if N <= 0 or head_k <= 0 or head_v <= 0 or hidden_size <= 0:
            raise ValueError(f"M2RNN: hidden_size, num_heads, head_k, head_v must be positive, got "
                             f"{hidden_size}, {num_heads}, {head_k}, {head_v}")
        nv = N if num_v_heads is None else num_v_heads
        nf = N if num_f_heads is None else num_f_heads
        nw = N if num_w_heads is None else num_w_heads
        for name, n in (("num_q_heads", num_q_heads), ("num_k_heads", num_k_heads),
                        ("num_v_heads", nv), ("num_f_heads", nf), ("num_w_heads", nw)):
            _heads_ok(name, n, N)
        if forget_gate not in ("sigmoid", "softplus"):
            raise ValueError(f"M2RNN: `forget_gate` must be 'sigmoid' or 'softplus', got {forget_gate!r}")
        if gradient_clipping is not None and not gradient_clipping > 0:
            raise ValueError(f"M2RNN: `gradient_clipping` must be positive or None, got {gradient_clipping}")

        self.hidden_size, self.num_heads, self.head_k, self.head_v = hidden_size, N, head_k, head_v
        self.num_q_heads, self.num_k_heads = num_q_heads, num_k_heads
        self.num_v_heads, self.num_f_heads, self.num_w_heads = nv, nf, nw
        self.forget_gate, self.use_conv, self.use_residual = forget_gate, use_conv, use_residual
        self.gradient_clipping, self.norm_eps = gradient_clipping, norm_eps
        self.kernel_config = kernel_config

        kw = dict(device=device, dtype=dtype)
        self.q_dim, self.k_dim, self.v_dim = num_q_heads * head_k, num_k_heads * head_k, nv * head_v
        self.conv_dim = self.q_dim + self.k_dim + self.v_dim
        self.g_dim = N * head_v
        self.in_proj = nn.Linear(hidden_size, self.conv_dim + nf + self.g_dim, bias=bias, **kw)
        if use_conv:
            bound = 1 / math.sqrt(CONV_WIDTH)   # nn.Conv1d's default for a depthwise kernel
            self.conv_weight = nn.Parameter(torch.empty(self.conv_dim, CONV_WIDTH, **kw).uniform_(-bound, bound))
            self.register_parameter("conv_bias", nn.Parameter(
                torch.empty(self.conv_dim, **kw).uniform_(-bound, bound)) if bias else None)
        self.W = nn.Parameter(torch.eye(head_v, **kw).repeat(nw, 1, 1))
        if forget_gate == "softplus":
            self.A_log = nn.Parameter(torch.zeros(nf, **kw))
        if use_residual:
            self.D = nn.Parameter(torch.ones(N, **kw))
        self.norm_weight = nn.Parameter(torch.ones(N * head_v, **kw))
        self.out_proj = nn.Linear(N * head_v, hidden_size, bias=bias, **kw)

    def extra_repr(self) -> str:
        return (f"hidden_size={self.hidden_size}, num_heads={self.num_heads}, head_k={self.head_k}, "
                f"head_v={self.head_v}, heads(q,k,v,f,w)=({self.num_q_heads}, {self.num_k_heads}, "
                f"{self.num_v_heads}, {self.num_f_heads}, {self.num_w_heads}), "
                f"forget_gate={self.forget_gate}, use_conv={self.use_conv}, "
                f"use_residual={self.use_residual}, gradient_clipping={self.gradient_clipping}")

    def problem(self, batch: int, seqlen: int, dtype: torch.dtype, *, with_state: bool = False):
        """The recurrence problem this layer solves for (batch, seqlen) inputs of `dtype`."""
        from .problem import Problem
        return Problem(B=batch, S=seqlen, K=self.head_k, V=self.head_v, Nq=self.num_q_heads,
                       Nk=self.num_k_heads, Nv=self.num_v_heads, Nw=self.num_w_heads, Nf=self.num_f_heads,
                       dtype=str(dtype).removeprefix("torch."), h0=with_state)

    def kernel_choices(self, batch: int, seqlen: int, dtype: torch.dtype = torch.bfloat16, *,
                       gpu: Optional[str] = None, with_state: bool = False,
                       training: bool = True) -> dict[str, Any]:
        """Which forward and backward kernel configs a call with (batch, seqlen) inputs runs, and why.

        The same lookup the op makes (m2tune.runtime: tuned profiles for `gpu`, default: this
        machine's GPU, else the default config), so what it says is what runs. training: a call
        whose gradients are taken (the forward then writes fp32-accurate checkpoints); False: a
        call under torch.no_grad() or with frozen parameters.
        """
        from .gpu import current_gpu
        from .ops import choices_for
        from .variants import interpreting
        problem = self.problem(batch, seqlen, dtype, with_state=with_state)
        gpu = gpu or current_gpu()
        if gpu is None and not interpreting():
            from .runtime import Choice
            ref = Choice("reference", None, "reference", "no GPU here and TRITON_INTERPRET unset: the op "
                         "runs the plain PyTorch reference (kernel_variants/m2rnn/naive.py)", None)
            return {"forward": ref, "backward": ref}
        return choices_for(problem, self.kernel_config, gpu=gpu, interpreter=gpu is None and interpreting(),
                           training=training, clipping=self.gradient_clipping is not None)

    # ------------------------------------------------------------------ checks
    def _check(self, x, state, cu_seqlens) -> int:
        """Validate the inputs; return the number of sequences (rows of the state)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"M2RNN: `x` expected a torch.Tensor (B, S, hidden_size), got {type(x).__name__}")
        if x.dim() != 3 or x.shape[-1] != self.hidden_size:
            raise ValueError(f"M2RNN: `x` expected shape (B, S, hidden_size={self.hidden_size}), "
                             f"got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"M2RNN: `x` expected a floating dtype, got {x.dtype}")
        weights = self.in_proj.weight.dtype
        if x.dtype != weights and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(f"M2RNN: `x` is {x.dtype} but the layer's weights are {weights}: convert one "
                            f"(layer.to({x.dtype}) or x.to({weights})), or call it under torch.autocast")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"M2RNN: `x` expected no empty dimension, got {tuple(x.shape)}")
        nseq = x.shape[0]
        if cu_seqlens is not None:
            if x.shape[0] != 1:
                raise ValueError(f"M2RNN: `x` expected batch size 1 with cu_seqlens (packed sequences), "
                                 f"got shape {tuple(x.shape)}")
            if not torch.compiler.is_compiling():       # reads the offsets: eager only
                seqlens_of(cu_seqlens, x.shape[1])
            if cu_seqlens.device != x.device:
                raise ValueError(f"M2RNN: `cu_seqlens` expected device {x.device} (as x), got {cu_seqlens.device}")
            nseq = cu_seqlens.numel() - 1
        if state is not None:
            if not isinstance(state, M2RNNState):
                raise TypeError(f"M2RNN: `state` expected an M2RNNState, got {type(state).__name__}")
            want = (nseq, self.num_heads, self.head_k, self.head_v)
            if not isinstance(state.h, torch.Tensor) or tuple(state.h.shape) != want:
                raise ValueError(f"M2RNN: `state.h` expected shape {want} (num_seqs, N, K, V), got "
                                 f"{tuple(getattr(state.h, 'shape', ())) or type(state.h).__name__}")
            if state.h.device != x.device:
                raise ValueError(f"M2RNN: `state.h` expected device {x.device} (as x), got {state.h.device}")
            if self.use_conv:
                want = (nseq, self.conv_dim, CONV_WIDTH - 1)
                if not isinstance(state.conv, torch.Tensor) or tuple(state.conv.shape) != want:
                    got = tuple(state.conv.shape) if isinstance(state.conv, torch.Tensor) else state.conv
                    raise ValueError(f"M2RNN: `state.conv` expected shape {want} (num_seqs, conv channels, "
                                     f"{CONV_WIDTH - 1}), got {got}")
            elif state.conv is not None:
                raise ValueError("M2RNN: `state.conv` expected None (use_conv=False), got a tensor")
        return nseq

    # -------------------------------------------------------------------- conv
    def _conv(self, u: torch.Tensor, prev: Optional[torch.Tensor], cu_seqlens: Optional[torch.Tensor]):
        """Depthwise causal conv + SiLU. u (B, S, C), prev (num_seqs, C, 3) or None -> (out, new prev)."""
        w = self.conv_weight.to(u.dtype)                       # (C, 4); w[:, 3] multiplies the current input
        B, S, C = u.shape
        tail = CONV_WIDTH - 1
        if cu_seqlens is None:
            prev_t = u.new_zeros(B, tail, C) if prev is None else prev.to(u.dtype).transpose(1, 2)
            buf = torch.cat([prev_t, u], dim=1)                # (B, S+3, C)
            out = sum(buf[:, j:j + S] * w[:, j] for j in range(CONV_WIDTH))
            new_prev = buf[:, -tail:].transpose(1, 2)
        else:
            nseq = cu_seqlens.numel() - 1
            ut = u[0]                                          # (T, C)
            cu = cu_seqlens.long()
            t = torch.arange(S, device=u.device)
            seq = torch.searchsorted(cu[1:], t, right=True)    # sequence of each token
            pos = t - cu[seq]                                  # position within its sequence
            prev_t = u.new_zeros(nseq, tail, C) if prev is None else prev.to(u.dtype).transpose(1, 2)
            out = ut * w[:, tail]
            for d in range(1, CONV_WIDTH):                     # input d steps back
                inside = (pos >= d)[:, None]
                from_x = ut[(t - d).clamp(min=0)]
                from_state = prev_t[seq, (tail - d + pos).clamp(max=tail - 1)]
                out = out + torch.where(inside, from_x, from_state) * w[:, tail - d]
            out = out[None]
            lens = cu[1:] - cu[:-1]                            # (nseq,)
            slot = torch.arange(tail, device=u.device)
            idx = lens[:, None] + slot                          # index into prev ++ x_i, (nseq, 3)
            from_x = ut[(cu[1:, None] - tail + slot).clamp(min=0)]
            from_state = prev_t[torch.arange(nseq, device=u.device)[:, None], idx.clamp(max=tail - 1)]
            new_prev = torch.where((idx >= tail)[..., None], from_x, from_state).transpose(1, 2)
        if self.conv_bias is not None:
            out = out + self.conv_bias.to(u.dtype)
        return F.silu(out), new_prev

    # ----------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, state: Optional[M2RNNState] = None,
                cu_seqlens: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, M2RNNState]:
        """x (B, S, hidden) or packed (1, T, hidden) with cu_seqlens -> (out like x, new state)."""
        from .ops import m2rnn

        self._check(x, state, cu_seqlens)
        B, S, _ = x.shape
        N, K, V = self.num_heads, self.head_k, self.head_v
        proj = self.in_proj(x)
        qkv, a, g = proj.split([self.conv_dim, self.num_f_heads, self.g_dim], dim=-1)
        conv_state = None
        if self.use_conv:
            qkv, conv_state = self._conv(qkv, None if state is None else state.conv, cu_seqlens)
        q, k, v = qkv.split([self.q_dim, self.k_dim, self.v_dim], dim=-1)
        scale = K ** -0.5
        q = (q * scale).reshape(B, S, self.num_q_heads, K)
        k = (k * scale).reshape(B, S, self.num_k_heads, K)
        v = v.reshape(B, S, self.num_v_heads, V)

        if self.forget_gate == "sigmoid":
            f = torch.sigmoid(a)
        else:
            f = torch.exp(-F.softplus(a.float()) * torch.exp(self.A_log.float())).to(a.dtype)

        h0 = None if state is None else state.h.float()
        y, h_T = m2rnn(q, k, v, self.W.to(q.dtype), f.to(q.dtype), h0, cu_seqlens=cu_seqlens,
                       gradient_clipping=self.gradient_clipping, config=self.kernel_config)

        if self.use_residual:
            v_full = v.repeat_interleave(N // self.num_v_heads, dim=2)
            y = y + self.D.to(y.dtype)[:, None] * v_full
        yf = y.float()
        yf = yf * torch.rsqrt(yf.pow(2).mean(-1, keepdim=True) + self.norm_eps)
        y = (yf.reshape(B, S, N * V) * self.norm_weight.float()).to(x.dtype)
        out = self.out_proj(y * F.silu(g))
        return out, M2RNNState(h_T, conv_state)
