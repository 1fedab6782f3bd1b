"""Forward M²RNN kernel: one program owns BLOCK_K rows of the state of BLOCK_B batch elements (or
packed sequences) of one head, and walks time.

Per step: x = k vᵀ, z = tanh(H W + x), H = f H + (1 - f) z, y = qᵀ H.
Rows of H are independent RNNs sharing W, so K may be split across programs;
y then sums over programs with fp32 atomics into a zeroed buffer.

Only H W, tanh and the blend are on the step's dependency chain; the loads of
k, v, q, f for later steps are issued PREFETCH steps ahead so their latency
hides behind the chain.

Parameters, checks and geometry: spec.FORWARD. The state is always kept in fp32.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from m2tune.inputs import Inputs
from m2tune.kernel_variants.m2rnn.common import (accumulate, compiled_info, interpreting, launcher, load_step,
                                                 load_w, matmul, sequences, tanh, tile)
from m2tune.kernel_variants.m2rnn.spec import FORWARD
from m2tune.problem import KernelConfig, Problem

SPEC = FORWARD


@triton.jit
def m2rnn_fwd_kernel(
    q_ptr, k_ptr, v_ptr, w_ptr, f_ptr, h0_ptr, cu_ptr, y_ptr, hT_ptr,
    ckpt_ptr,  # backward checkpoints (fp32, NSEQ x N x cdiv(S, CKPT) x K x V); unused when CKPT == 0
    NSEQ, S, N, Nq, Nk, Nv, Nw, Nf, K, V,
    BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr, BV: tl.constexpr,
    PREFETCH: tl.constexpr, MATMUL: tl.constexpr, TANH_APPROX: tl.constexpr,
    VARLEN: tl.constexpr, HAS_H0: tl.constexpr, SPLIT_K: tl.constexpr,
    EMULATE_BF16_DOT: tl.constexpr, CKPT: tl.constexpr = 0,
):
    BM: tl.constexpr = BLOCK_B * BLOCK_K
    pid_k = tl.program_id(0)
    pid_b = tl.program_id(1)
    n = tl.program_id(2)
    hq = n // (N // Nq)
    hk = n // (N // Nk)
    hv = n // (N // Nv)
    hw = n // (N // Nw)
    hf = n // (N // Nf)

    r, rows_b, rows_k, row_ok, cols, col_ok, bb, b_ok = tile(pid_k, pid_b, NSEQ, K, V,
                                                             BLOCK_K, BLOCK_B, BV)
    bos, seqlen, bos_y, len_y, n_steps = sequences(cu_ptr, rows_b, row_ok, bb, b_ok, S, VARLEN)
    w = load_w(w_ptr, hw, V, BV)                                  # [BV, BV]
    wt = tl.trans(w)                                             # [BV(j), BV(i)], for fma

    st_offs = ((rows_b.to(tl.int64) * N + n) * K + rows_k)[:, None] * V + cols[None, :]  # [BM, BV]
    st_mask = row_ok[:, None] & col_ok[None, :]
    if HAS_H0:
        h = tl.load(h0_ptr + st_offs, mask=st_mask, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BM, BV], dtype=tl.float32)

    if PREFETCH >= 1:
        nk, nv, nq, nf = load_step(k_ptr, v_ptr, q_ptr, f_ptr, bos, row_ok & (0 < seqlen),
                                   rows_k, cols, col_ok, hk, hv, hq, hf, Nq, Nk, Nv, Nf, K, V)
    if PREFETCH >= 2:
        nk2, nv2, nq2, nf2 = load_step(k_ptr, v_ptr, q_ptr, f_ptr, bos + 1, row_ok & (1 < seqlen),
                                       rows_k, cols, col_ok, hk, hv, hq, hf, Nq, Nk, Nv, Nf, K, V)

    # ---- backward checkpoints (m2rnn_bwd): fp32 state after t steps, t % CKPT == 0 ----
    if CKPT > 0:
        n_chunks = (S + CKPT - 1) // CKPT
        ck_offs = (((rows_b.to(tl.int64) * N + n) * n_chunks) * K + rows_k)[:, None] * V + cols[None, :]
    # ---- end backward checkpoints ----

    for t in range(0, n_steps):
        if CKPT > 0:  # backward checkpoint: chunk t // CKPT starts from this state
            if t % CKPT == 0:
                tl.store(ckpt_ptr + ck_offs + (t // CKPT) * K * V, h, mask=st_mask)
        if PREFETCH == 0:
            kt, vt, qt, ft = load_step(k_ptr, v_ptr, q_ptr, f_ptr, bos + t, row_ok & (t < seqlen),
                                       rows_k, cols, col_ok, hk, hv, hq, hf, Nq, Nk, Nv, Nf, K, V)
        elif PREFETCH == 1:
            kt, vt, qt, ft = nk, nv, nq, nf
            nk, nv, nq, nf = load_step(k_ptr, v_ptr, q_ptr, f_ptr, bos + t + 1,
                                       row_ok & (t + 1 < seqlen), rows_k, cols, col_ok,
                                       hk, hv, hq, hf, Nq, Nk, Nv, Nf, K, V)
        else:
            kt, vt, qt, ft = nk, nv, nq, nf
            nk, nv, nq, nf = nk2, nv2, nq2, nf2
            nk2, nv2, nq2, nf2 = load_step(k_ptr, v_ptr, q_ptr, f_ptr, bos + t + 2,
                                           row_ok & (t + 2 < seqlen), rows_k, cols, col_ok,
                                           hk, hv, hq, hf, Nq, Nk, Nv, Nf, K, V)

        # ---- the step's dependency chain: H W, tanh, blend ----
        hw_ = matmul(h, w, wt, MATMUL, EMULATE_BF16_DOT)        # [BM, BV]
        z = tanh(hw_ + kt[:, None] * vt, TANH_APPROX)            # [BM, BV]
        fb = ft[:, None]
        h_new = fb * h + (1.0 - fb) * z
        if VARLEN:
            # rows whose sequence has ended keep their final state
            h = tl.where((t < seqlen)[:, None], h_new, h)
        else:
            h = h_new

        # ---- off the chain: y_t = q_tᵀ H_t, summed over this program's rows ----
        yb = tl.sum(tl.reshape(qt[:, None] * h, (BLOCK_B, BLOCK_K, BV)), axis=1)  # [BLOCK_B, BV]
        y_offs = ((bos_y + t) * N + n)[:, None] * V + cols[None, :]
        y_mask = (b_ok & (t < len_y))[:, None] & col_ok[None, :]
        accumulate(y_ptr, y_offs, yb, y_mask, SPLIT_K)

    tl.store(hT_ptr + st_offs, h.to(hT_ptr.dtype.element_ty), mask=st_mask)


def launch(problem: Problem, config: KernelConfig, x: Inputs,
           y: torch.Tensor, h_T: torch.Tensor, *, ckpt_every: int = 0,
           info: Optional[dict] = None, compile_only: bool = False) -> Optional[torch.Tensor]:
    """Run the forward pass, writing every element of y (like v, N heads) and h_T (fp32 or any float).

    ckpt_every > 0 (for a backward, bwd.py): also return the fp32 state at the start of every chunk
    of ckpt_every steps, shape (num_seqs, N, cdiv(S, ckpt_every), K, V).
    info: a dict to receive the compiled kernel's n_regs, n_spills, shared (bytes), num_warps.
    compile_only: compile into Triton's cache without launching (common.launcher).
    """
    p = config.as_dict()
    nseq = problem.B
    layout = SPEC.layout(problem, config)
    split_k = layout.k_blocks > 1
    # K split across programs: y is a sum over programs, kept in fp32 with atomics
    y_acc = torch.zeros(y.shape, dtype=torch.float32, device=y.device) if split_k else y
    cont = [t.contiguous() for t in (x.q, x.k, x.v, x.W, x.f)]
    h0 = x.h0.contiguous() if x.h0 is not None else cont[0]     # unused pointer when no h0
    cu = x.cu_seqlens if x.cu_seqlens is not None else cont[0]   # unused pointer when not varlen
    ckpt = None
    if ckpt_every:  # backward checkpoints; chunks past a sequence's end stay unwritten
        ckpt = torch.empty((nseq, problem.N, triton.cdiv(problem.S, ckpt_every), problem.K, problem.V),
                           dtype=torch.float32, device=y.device)
    kernel = launcher(m2rnn_fwd_kernel, layout.grid, compile_only)(
        *cont, h0, cu, y_acc, h_T, ckpt if ckpt is not None else y_acc,
        nseq, problem.S, problem.N, problem.Nq, problem.Nk, problem.Nv, problem.Nw, problem.Nf,
        problem.K, problem.V,
        BLOCK_K=p["BLOCK_K"], BLOCK_B=p["BLOCK_B"], BV=layout.bv,
        PREFETCH=p["PREFETCH"], MATMUL=p["MATMUL"], TANH_APPROX=p["TANH"] == "approx",
        VARLEN=problem.is_varlen, HAS_H0=x.h0 is not None, SPLIT_K=split_k,
        EMULATE_BF16_DOT=interpreting(), CKPT=ckpt_every,
        num_warps=p["num_warps"], num_stages=p["num_stages"],
    )
    compiled_info(kernel, info)
    if split_k:
        y.copy_(y_acc)
    return ckpt
