"""Backward M²RNN kernel: chunked recompute from forward checkpoints.

The forward (fwd.py, `launch(..., ckpt_every=CKPT)`) stores the fp32 state at
the start of every chunk of CKPT steps (chunks start at multiples of CKPT from each sequence's own
start). Here one program owns BLOCK_K rows of the state of BLOCK_B batch elements (or packed
sequences) of one head, as in the forward, and walks the chunks in reverse. For each chunk it

1. loads the checkpoint and recomputes the chunk's states forward, writing the state before every
   step (and, with STORE_Z, z_t) to a per-program fp32 scratch buffer in global memory
   (CKPT x BM x BV per program; re-read by the same program, so it mostly stays in L1/L2);
2. sweeps back through the chunk (per step, t descending):
     dH  += q_t dy_tᵀ (dH starts as dh_T);  clamp to [-c, c] with gradient_clipping
     dq_t = H_t dy_t,   da = dH (1 - f_t)(1 - z_t²),   df_t = Σ dH ⊙ (H_{t-1} - z_t)
     dk_t = da v_t,     dv_t = daᵀ k_t,                dW  += H_{t-1}ᵀ da
     dH   = f_t dH + da Wᵀ                              (dh0 = the final dH)
   Only dH -> da -> da Wᵀ -> dH is on the step's dependency chain; the loads for the steps ahead
   (inputs, dy, scratch) are issued PREFETCH steps early, within the chunk (the recompute in 1.
   prefetches one step ahead whenever PREFETCH >= 1).

Gradients of shared tensors (heads sharing q/k/v/W/f, GQA-style, and K split across programs):

- dW: every program writes its [V, V] partial once, at the end (fp32, grid x V x V); torch sums.
- dq, dk, dv, df: fp32 atomics "across the group dimension" only, spread over SLOTS copies to cut
  same-address contention (grads.py: R = min(SLOTS, g) copies, g = N // Nx heads sharing one head
  of x; plain stores where a program is the only writer, the input dtype directly when R == 1).
  No per-head (B, S, N, K) partial is ever materialised (553 MB in fp32 at paper-7b).
- dh0: disjoint per program, stored directly.

Extra memory at paper-7b (B=4 S=4096 N=132 K=64 V=16 bf16; Nq=Nk=1, Nv=Nw=Nf=132), defaults
CKPT=64 BLOCK_K=16 SLOTS=4 STORE_Z=0 (`extra_bytes()` computes it for any problem/config):
  checkpoints 4*132*64*64*16*4 B = 132 MiB, scratch (2112 programs x 64 x 16 x 16 x 4 B) = 132 MiB,
  dq + dk slots 2 x 4 x 4 MiB = 32 MiB, dv fp32 (K split -> atomics) 132 MiB, df fp32 8 MiB,
  dW partials 2 MiB: about 440 MiB (CKPT=32: 504 MiB; STORE_Z=1 adds one more scratch, 570 MiB;
  BLOCK_K=64 needs no dv accumulator, 297 MiB). Measured on an H200 (torch.cuda peak during
  forward + backward, beyond inputs and gradients): 439 MiB at the defaults.

Parameters, checks, geometry and the gradient plan: spec.BACKWARD. The state and every
accumulation are fp32.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from m2tune.inputs import Inputs
from m2tune.kernel_variants.m2rnn.common import (accumulate, compiled_info, dot, interpreting, launcher,
                                                 load_step, load_w, matmul, sequences, tanh, tile)
from m2tune.kernel_variants.m2rnn.grads import backward_buffers
from m2tune.kernel_variants.m2rnn.spec import BACKWARD
from m2tune.problem import KernelConfig, Problem

SPEC = BACKWARD


@triton.jit
def _matmul_tn(a, b, MATMUL: tl.constexpr, EMULATE_BF16_DOT: tl.constexpr):
    # aᵀ [BV, BM] @ b [BM, BV] -> [BV, BV]: contracts over the tile's rows
    if MATMUL == "fma":
        return tl.sum(a[:, :, None] * b[:, None, :], axis=0)
    else:
        return dot(tl.trans(a), b, MATMUL, EMULATE_BF16_DOT)


@triton.jit
def _load_bwd_step(k_ptr, v_ptr, q_ptr, f_ptr, dy_ptr, scr_ptr, scz_ptr, t, j, bos, seqlen, row_ok,
                   rows_k, cols, col_ok, sc_row, hk, hv, hq, hf, n, N, Nq, Nk, Nv, Nf, K, V,
                   BM: tl.constexpr, BV: tl.constexpr, STORE_Z: tl.constexpr):
    # inputs and dy of step t (token bos + t), state before it and z from scratch slot j (j >= 0)
    # j >= 0 compared per row, not as a scalar broadcast into the mask: Triton 3.9's interpreter
    # gives a broadcast scalar comparison int32 data (ValueError: mask has unsupported dtype)
    in_chunk = (j + tl.zeros([BM], tl.int32)) >= 0                            # [BM]
    ok = row_ok & (t < seqlen) & in_chunk
    kt, vt, qt, ft = load_step(k_ptr, v_ptr, q_ptr, f_ptr, bos + t, ok, rows_k, cols, col_ok,
                               hk, hv, hq, hf, Nq, Nk, Nv, Nf, K, V)
    dyt = tl.load(dy_ptr + ((bos + t) * N + n)[:, None] * V + cols[None, :],
                  mask=ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
    sc = sc_row[:, None] + (j * (BM * BV) + cols)[None, :]
    in_scratch = ((sc_row >= 0) & in_chunk)[:, None]
    hp = tl.load(scr_ptr + sc, mask=in_scratch, other=0.0)
    if STORE_Z:
        zt = tl.load(scz_ptr + sc, mask=in_scratch, other=0.0)
    else:
        zt = hp
    return kt, vt, qt, ft, dyt, hp, zt


@triton.jit
def m2rnn_bwd_kernel(
    q_ptr, k_ptr, v_ptr, w_ptr, f_ptr, cu_ptr, ckpt_ptr, dy_ptr, dhT_ptr,
    scr_ptr, scz_ptr, dq_ptr, dk_ptr, dv_ptr, df_ptr, dw_ptr, dh0_ptr,
    clip, NSEQ, S, TOK, N, Nq, Nk, Nv, Nw, Nf, K, V, RQ, RK, RV, RF,
    BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr, BV: tl.constexpr, CKPT: tl.constexpr,
    PREFETCH: tl.constexpr, MATMUL: tl.constexpr, TANH_APPROX: tl.constexpr,
    VARLEN: tl.constexpr, HAS_H0: tl.constexpr, HAS_DHT: tl.constexpr, CLIP: tl.constexpr,
    STORE_Z: tl.constexpr, DW_MATMUL: tl.constexpr, DQ_ATOMIC: tl.constexpr, DK_ATOMIC: tl.constexpr,
    DV_ATOMIC: tl.constexpr, DF_ATOMIC: tl.constexpr, EMULATE_BF16_DOT: tl.constexpr,
):
    BM: tl.constexpr = BLOCK_B * BLOCK_K
    pid_k = tl.program_id(0)
    pid_b = tl.program_id(1)
    n = tl.program_id(2)
    prog = (n * tl.num_programs(1) + pid_b) * tl.num_programs(0) + pid_k
    hq = n // (N // Nq)
    hk = n // (N // Nk)
    hv = n // (N // Nv)
    hw = n // (N // Nw)
    hf = n // (N // Nf)
    # accumulator copy of each shared gradient this head adds into (see the module docstring)
    dq_base = dq_ptr + ((n % (N // Nq)) % RQ).to(tl.int64) * TOK * Nq * K
    dk_base = dk_ptr + ((n % (N // Nk)) % RK).to(tl.int64) * TOK * Nk * K
    dv_base = dv_ptr + ((n % (N // Nv)) % RV).to(tl.int64) * TOK * Nv * V
    df_base = df_ptr + ((n % (N // Nf)) % RF).to(tl.int64) * TOK * Nf

    r, rows_b, rows_k, row_ok, cols, col_ok, bb, b_ok = tile(pid_k, pid_b, NSEQ, K, V,
                                                             BLOCK_K, BLOCK_B, BV)
    bos, seqlen, bos_y, len_y, n_steps = sequences(cu_ptr, rows_b, row_ok, bb, b_ok, S, VARLEN)
    w = load_w(w_ptr, hw, V, BV)                                  # [BV, BV]
    wt = tl.trans(w)

    st_offs = ((rows_b.to(tl.int64) * N + n) * K + rows_k)[:, None] * V + cols[None, :]
    st_mask = row_ok[:, None] & col_ok[None, :]
    n_chunks = (S + CKPT - 1) // CKPT
    ck_offs = (((rows_b.to(tl.int64) * N + n) * n_chunks) * K + rows_k)[:, None] * V + cols[None, :]
    # this program's scratch: [CKPT, BM, BV] fp32, full tiles (padding included)
    sc_row = prog.to(tl.int64) * (CKPT * BM * BV) + r * BV                     # [BM]
    sc_tile = sc_row[:, None] + cols[None, :]

    if HAS_DHT:
        dh = tl.load(dhT_ptr + st_offs, mask=st_mask, other=0.0).to(tl.float32)
    else:
        dh = tl.zeros([BM, BV], dtype=tl.float32)
    dw = tl.zeros([BV, BV], dtype=tl.float32)

    n_chunks_here = (n_steps + CKPT - 1) // CKPT
    for ci in range(0, n_chunks_here):
        c = n_chunks_here - 1 - ci
        t0 = c * CKPT
        L = tl.minimum(n_steps - t0, CKPT)
        tl.debug_barrier()  # the previous chunk's sweep has read the scratch it is about to reuse

        # ---- 1. recompute the chunk forward from its checkpoint ----
        h = tl.load(ckpt_ptr + ck_offs + c * K * V, mask=st_mask & (t0 < seqlen)[:, None], other=0.0)
        if PREFETCH >= 1:
            nk, nv, nq, nf = load_step(k_ptr, v_ptr, q_ptr, f_ptr, bos + t0, row_ok & (t0 < seqlen),
                                       rows_k, cols, col_ok, hk, hv, hq, hf, Nq, Nk, Nv, Nf, K, V)
        for j in range(0, L):
            t = t0 + j
            if PREFETCH == 0:
                kt, vt, qt, ft = load_step(k_ptr, v_ptr, q_ptr, f_ptr, bos + t, row_ok & (t < seqlen),
                                           rows_k, cols, col_ok, hk, hv, hq, hf, Nq, Nk, Nv, Nf, K, V)
            else:
                kt, vt, qt, ft = nk, nv, nq, nf
                nk, nv, nq, nf = load_step(k_ptr, v_ptr, q_ptr, f_ptr, bos + t + 1,
                                           row_ok & (t + 1 < seqlen), rows_k, cols, col_ok,
                                           hk, hv, hq, hf, Nq, Nk, Nv, Nf, K, V)
            tl.store(scr_ptr + sc_tile + j * (BM * BV), h)
            z = tanh(matmul(h, w, wt, MATMUL, EMULATE_BF16_DOT) + kt[:, None] * vt, TANH_APPROX)
            if STORE_Z:
                tl.store(scz_ptr + sc_tile + j * (BM * BV), z)
            fb = ft[:, None]
            h_new = fb * h + (1.0 - fb) * z
            if VARLEN:
                h = tl.where((t < seqlen)[:, None], h_new, h)
            else:
                h = h_new
        tl.debug_barrier()  # scratch written above is read below, possibly by other threads

        # ---- 2. sweep back through the chunk ----
        h_cur = h                                                            # H_t of the step
        if PREFETCH >= 1:
            pk, pv, pq, pf, pdy, php, pz = _load_bwd_step(
                k_ptr, v_ptr, q_ptr, f_ptr, dy_ptr, scr_ptr, scz_ptr, t0 + L - 1, L - 1, bos, seqlen,
                row_ok, rows_k, cols, col_ok, sc_row, hk, hv, hq, hf, n, N, Nq, Nk, Nv, Nf, K, V,
                BM, BV, STORE_Z)
        if PREFETCH >= 2:
            pk2, pv2, pq2, pf2, pdy2, php2, pz2 = _load_bwd_step(
                k_ptr, v_ptr, q_ptr, f_ptr, dy_ptr, scr_ptr, scz_ptr, t0 + L - 2, L - 2, bos, seqlen,
                row_ok, rows_k, cols, col_ok, sc_row, hk, hv, hq, hf, n, N, Nq, Nk, Nv, Nf, K, V,
                BM, BV, STORE_Z)
        for jj in range(0, L):
            j = L - 1 - jj
            t = t0 + j
            if PREFETCH == 0:
                kt, vt, qt, ft, dyt, hp, zt = _load_bwd_step(
                    k_ptr, v_ptr, q_ptr, f_ptr, dy_ptr, scr_ptr, scz_ptr, t, j, bos, seqlen,
                    row_ok, rows_k, cols, col_ok, sc_row, hk, hv, hq, hf, n, N, Nq, Nk, Nv, Nf, K, V,
                    BM, BV, STORE_Z)
            elif PREFETCH == 1:
                kt, vt, qt, ft, dyt, hp, zt = pk, pv, pq, pf, pdy, php, pz
                pk, pv, pq, pf, pdy, php, pz = _load_bwd_step(
                    k_ptr, v_ptr, q_ptr, f_ptr, dy_ptr, scr_ptr, scz_ptr, t - 1, j - 1, bos, seqlen,
                    row_ok, rows_k, cols, col_ok, sc_row, hk, hv, hq, hf, n, N, Nq, Nk, Nv, Nf, K, V,
                    BM, BV, STORE_Z)
            else:
                kt, vt, qt, ft, dyt, hp, zt = pk, pv, pq, pf, pdy, php, pz
                pk, pv, pq, pf, pdy, php, pz = pk2, pv2, pq2, pf2, pdy2, php2, pz2
                pk2, pv2, pq2, pf2, pdy2, php2, pz2 = _load_bwd_step(
                    k_ptr, v_ptr, q_ptr, f_ptr, dy_ptr, scr_ptr, scz_ptr, t - 2, j - 2, bos, seqlen,
                    row_ok, rows_k, cols, col_ok, sc_row, hk, hv, hq, hf, n, N, Nq, Nk, Nv, Nf, K, V,
                    BM, BV, STORE_Z)
            act = row_ok & (t < seqlen)                                      # [BM] step is real

            if STORE_Z:
                z = zt
            else:
                z = tanh(matmul(hp, w, wt, MATMUL, EMULATE_BF16_DOT) + kt[:, None] * vt, TANH_APPROX)

            # total gradient of H_t (q, dy are zero where the step is not real)
            g = dh + qt[:, None] * dyt
            if CLIP:
                gc = tl.minimum(tl.maximum(g, -clip), clip)
                if VARLEN:
                    g = tl.where(act[:, None], gc, g)   # ended rows carry dh_T unclamped
                else:
                    g = gc
            fb = ft[:, None]
            da = g * (1.0 - fb) * (1.0 - z * z)
            dfe = g * (hp - z)
            if VARLEN:
                da = tl.where(act[:, None], da, 0.0)
                dfe = tl.where(act[:, None], dfe, 0.0)

            # ---- the chain: dH_{t-1} = f dH_t + da Wᵀ ----
            dh_new = fb * g + matmul(da, wt, w, MATMUL, EMULATE_BF16_DOT)
            if VARLEN:
                dh = tl.where(act[:, None], dh_new, g)
            else:
                dh = dh_new

            # ---- off the chain: gradients of this step's inputs ----
            dw += _matmul_tn(hp, da, DW_MATMUL, EMULATE_BF16_DOT)
            dqt = tl.sum(dyt * h_cur, axis=1)                                # [BM]
            dkt = tl.sum(da * vt, axis=1)                                    # [BM]
            dvt = tl.sum(tl.reshape(da * kt[:, None], (BLOCK_B, BLOCK_K, BV)), axis=1)   # [BLOCK_B, BV]
            dft = tl.sum(tl.sum(tl.reshape(dfe, (BLOCK_B, BLOCK_K, BV)), axis=2), axis=1)  # [BLOCK_B]
            h_cur = hp

            tok = bos + t
            q_offs = (tok * Nq + hq) * K + rows_k
            k_offs = (tok * Nk + hk) * K + rows_k
            accumulate(dq_base, q_offs, dqt, act, DQ_ATOMIC)
            accumulate(dk_base, k_offs, dkt, act, DK_ATOMIC)
            b_act = b_ok & (t < len_y)
            v_offs = ((bos_y + t) * Nv + hv)[:, None] * V + cols[None, :]
            v_mask = b_act[:, None] & col_ok[None, :]
            f_offs = (bos_y + t) * Nf + hf
            accumulate(dv_base, v_offs, dvt, v_mask, DV_ATOMIC)
            accumulate(df_base, f_offs, dft, b_act, DF_ATOMIC)

    # dW partial of this program, reduced over programs and shared heads by the launcher
    tl.store(dw_ptr + prog.to(tl.int64) * V * V + cols[:, None] * V + cols[None, :], dw,
             mask=col_ok[:, None] & col_ok[None, :])
    if HAS_H0:
        tl.store(dh0_ptr + st_offs, dh.to(dh0_ptr.dtype.element_ty), mask=st_mask)


def launch_backward(problem: Problem, config: KernelConfig, x: Inputs, ckpt: torch.Tensor,
                    dy: torch.Tensor, dh_T: Optional[torch.Tensor], *,
                    gradient_clipping: Optional[float] = None,
                    poison: bool = False, info: Optional[dict] = None,
                    compile_only: bool = False) -> dict[str, torch.Tensor]:
    """Gradients {"q", "k", "v", "W", "f"(, "h0")} in the inputs' dtypes and shapes.

    ckpt: from the forward's `launch(..., ckpt_every=config["CKPT"])`. dy: like y (B, S, N, V);
    dh_T: like h_T, or None for zero. poison: fill every buffer the kernel must overwrite
    completely with NaN instead of leaving it uninitialised (validation). info: a dict to receive
    the compiled kernel's registers and shared memory (see common.compiled_info).
    """
    p = config.as_dict()
    nseq, N, K, V, T = problem.B, problem.N, problem.K, problem.V, problem.tokens
    ck = p["CKPT"]
    grads = backward_buffers(SPEC, problem, config, x, ckpt, poison=poison)
    plan, bufs, dw_part, dh0 = grads.plan, grads.bufs, grads.dw_part, grads.dh0
    dev = x.q.device

    layout = SPEC.layout(problem, config)
    grid, progs, bm, bv = layout.grid, layout.programs, layout.bm, layout.bv
    scratch = torch.empty((progs, ck, bm, bv), dtype=torch.float32, device=dev)
    scratch_z = torch.empty_like(scratch) if p["STORE_Z"] else scratch

    cont = [t.contiguous() for t in (x.q, x.k, x.v, x.W, x.f)]
    cu = x.cu_seqlens if x.cu_seqlens is not None else cont[0]
    dy = dy.contiguous()
    dh_T_ = dh_T.contiguous() if dh_T is not None else dy
    kernel = launcher(m2rnn_bwd_kernel, grid, compile_only)(
        *cont, cu, ckpt.contiguous(), dy, dh_T_,
        scratch, scratch_z, bufs["q"], bufs["k"], bufs["v"], bufs["f"], dw_part,
        dh0 if dh0 is not None else dw_part,
        float(gradient_clipping) if gradient_clipping is not None else 0.0,
        nseq, problem.S, T, N, problem.Nq, problem.Nk, problem.Nv, problem.Nw, problem.Nf, K, V,
        plan["q"][0], plan["k"][0], plan["v"][0], plan["f"][0],
        BLOCK_K=p["BLOCK_K"], BLOCK_B=p["BLOCK_B"], BV=bv, CKPT=ck,
        PREFETCH=p["PREFETCH"], MATMUL=p["MATMUL"], TANH_APPROX=p["TANH"] == "approx",
        VARLEN=problem.is_varlen, HAS_H0=x.h0 is not None, HAS_DHT=dh_T is not None,
        CLIP=gradient_clipping is not None, STORE_Z=bool(p["STORE_Z"]), DW_MATMUL=SPEC.dw_matmul(config),
        DQ_ATOMIC=plan["q"][1], DK_ATOMIC=plan["k"][1], DV_ATOMIC=plan["v"][1], DF_ATOMIC=plan["f"][1],
        EMULATE_BF16_DOT=interpreting(),
        num_warps=p["num_warps"], num_stages=p["num_stages"],
    )
    compiled_info(kernel, info)
    return grads.finish()
