"""Lean backward M²RNN kernel: the step loop carries only the dH chain; input gradients in blocks of steps.

One program owns BLOCK_K state rows of one sequence (batch element or packed sequence) of one head,
so every per-step input is a row vector (k, q: [BLOCK_K]), a column vector (v, dy: [BV]) or a scalar
(f), and a packed sequence's program walks exactly its own steps (no per-step masks). It walks the
chunks of CKPT steps in reverse; per chunk:

1. recompute the chunk forward from its checkpoint, storing the state before every step and the
   state after the last into a per-program fp32 scratch H [CKPT + 1, BLOCK_K, BV];
2. for each block of BULK steps, last block first:
   a. the chain (per step, t descending), nothing else:
        g  = dH + q_t dy_tᵀ, clamped to [-c, c];   da = g (1 - f_t)(1 - z_t²);   dH = f_t g + da Wᵀ
      with z_t recomputed from H_{t-1} off the chain (PREFETCH=2: a step ahead, its inputs two
      steps ahead); da and g ⊙ (H_{t-1} - z_t) go to a per-program scratch [2, BULK, BLOCK_K, BV];
      dH stays in registers, fp32;
   b. the block's gradients at once, on [BULK, BLOCK_K, BV] tiles with no step-to-step dependency:
        dW += Σ H_{t-1}ᵀ da  (one product contracting BULK·BLOCK_K rows),   dk_t = da v_t,
        dv_t = daᵀ k_t,   df_t = Σ g ⊙ (H_{t-1} - z_t),   dq_t = H_t dy_t,
      and their stores (fp32 atomics where heads or K blocks share an element, as bwd.py).
   The block's scratch was written a moment earlier by the same program and is read back from cache.

With INLINE=1 two of those reductions move to where their operands already sit in registers: dq_t = H_t dy_t
into the recompute (H_t is the state it has just computed) and df_t into the chain step (g and H_{t-1} - z_t
are its own values), so g ⊙ (H_{t-1} - z_t) is never stored and the block reads back only H_{t-1} and da:
five tile transfers per step instead of eight.

SCRATCH=bf16 halves the scratch bytes: H and da are stored in the bf16 a bf16 product (allowed
only with one) rounds them to anyway; only e = H_{t-1} - z_t (df) and dk, dv see the rounding.

dh0 is the final dH. Parameters, checks and memory: spec.LEAN_BACKWARD. State, dH and every sum are
fp32; products follow MATMUL (H W, da Wᵀ) and DW_MATMUL (dW). Addresses: per chunk (_row).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from m2tune.inputs import Inputs
from m2tune.kernel_variants.m2rnn.common import (accumulate, compiled_info, dot, interpreting, launcher,
                                                 load_w, matmul, tanh)
from m2tune.kernel_variants.m2rnn.grads import backward_buffers
from m2tune.kernel_variants.m2rnn.spec import LEAN_BACKWARD
from m2tune.problem import KernelConfig, Problem

SPEC = LEAN_BACKWARD


@triton.jit
def _load(ptr, mask, EVEN: tl.constexpr):
    # fp32 values; masked only where the tile has padding (EVEN: K % BLOCK_K == 0 and V == BV)
    if EVEN:
        return tl.load(ptr).to(tl.float32)
    else:
        return tl.load(ptr, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _row(ptr, tok0, h, NH, D):
    """Head h's row of token tok0 (int64) in a [tokens, NH, D] tensor: 64-bit arithmetic once per
    chunk; a step adds its slot's int32 offset j * NH * D (j < CKPT: no overflow)."""
    return ptr + (tok0 * NH + h) * D


@triton.jit
def _step_inputs(kc, vc, fc, j, rows_k, row_ok, cols, col_ok, Nk, Nv, Nf, K, V, EVEN: tl.constexpr):
    """k_t [BLOCK_K], v_t [BV], f_t (scalar) of chunk slot j (kc, vc, fc: the chunk's rows, _row)."""
    kt = _load(kc + j * (Nk * K) + rows_k, row_ok, EVEN)
    vt = _load(vc + j * (Nv * V) + cols, col_ok, EVEN)
    ft = tl.load(fc + j * Nf).to(tl.float32)
    return kt, vt, ft


@triton.jit
def _recompute_inputs(kc, vc, fc, dyc, j, rows_k, row_ok, cols, col_ok, N, Nk, Nv, Nf, K, V, INLINE: tl.constexpr,
                      EVEN: tl.constexpr):
    """k_t, v_t, f_t of chunk slot j and, with INLINE (dq in the recompute), dy_t [BV]."""
    kt, vt, ft = _step_inputs(kc, vc, fc, j, rows_k, row_ok, cols, col_ok, Nk, Nv, Nf, K, V, EVEN)
    if INLINE:
        dyt = _load(dyc + j * (N * V) + cols, col_ok, EVEN)
    else:
        dyt = vt                                                   # not read
    return kt, vt, ft, dyt


@triton.jit
def _dq_step(h, dyt, dqc, j, on, Nq, K, rows_k, row_ok, DQ_ATOMIC: tl.constexpr):
    """INLINE: dq_t = H_t dy_t [BLOCK_K] of chunk slot j from the state just recomputed (`on`: this
    recompute's dq counts). A [BLOCK_K] mask: Triton 3.9's interpreter refuses `row_ok & on`."""
    keep = row_ok & ((rows_k * 0 + on) != 0)
    accumulate(dqc, j * (Nq * K) + rows_k, tl.sum(h * dyt[None, :], axis=1), keep, DQ_ATOMIC)


@triton.jit
def _sweep_inputs(qc, kc, vc, fc, dyc, sc_base, j, rows_k, row_ok, cols, col_ok, in_tile, N, Nq, Nk, Nv, Nf, K, V,
                  TILE: tl.constexpr, EVEN: tl.constexpr):
    """What the chain needs of chunk slot j: k_t, v_t, f_t, q_t, dy_t and H_{t-1}."""
    kt, vt, ft = _step_inputs(kc, vc, fc, j, rows_k, row_ok, cols, col_ok, Nk, Nv, Nf, K, V, EVEN)
    qt = _load(qc + j * (Nq * K) + rows_k, row_ok, EVEN)                         # [BLOCK_K]
    dyt = _load(dyc + j * (N * V) + cols, col_ok, EVEN)                          # [BV]
    hp = tl.load(sc_base + j * TILE + in_tile)                    # [BLOCK_K, BV] in the scratch's dtype
    return kt, vt, ft, qt, dyt, hp


@triton.jit
def _forward_step(h, kt, vt, ft, w, wt, MATMUL: tl.constexpr, TANH_APPROX: tl.constexpr,
                  EMULATE_BF16_DOT: tl.constexpr):
    """H_t from H_{t-1}: the recompute's step."""
    z = tanh(matmul(h, w, wt, MATMUL, EMULATE_BF16_DOT) + kt[:, None] * vt[None, :], TANH_APPROX)
    return ft * h + (1.0 - ft) * z


@triton.jit
def _recompute(ckpt_ptr, k_ptr, v_ptr, f_ptr, dy_ptr, dq_base, dst, c, L, bos, n_steps, ck_ptr_offs, rows_k, row_ok,
               cols, col_ok, tile_mask, in_tile, w, wt, hq, hk, hv, hf, n, N, Nq, Nk, Nv, Nf, K, V,
               TILE: tl.constexpr, CKPT: tl.constexpr, PREFETCH: tl.constexpr, INLINE: tl.constexpr,
               MATMUL: tl.constexpr, TANH_APPROX: tl.constexpr, EVEN: tl.constexpr, DQ_ATOMIC: tl.constexpr,
               EMULATE_BF16_DOT: tl.constexpr):
    """Chunk c (L steps) forward from its checkpoint: H_{t-1} into slot j of dst, the end into slot L
    (INLINE: dq of every step instead of the end)."""
    t0 = c * CKPT
    tok0 = bos + t0
    kc, vc, fc = _row(k_ptr, tok0, hk, Nk, K), _row(v_ptr, tok0, hv, Nv, V), _row(f_ptr, tok0, hf, Nf, 1)
    dyc, dqc = _row(dy_ptr, tok0, n, N, V), _row(dq_base, tok0, hq, Nq, K)
    h = _load(ckpt_ptr + ck_ptr_offs, tile_mask, EVEN)
    if PREFETCH:
        nk, nv, nf, ndy = _recompute_inputs(kc, vc, fc, dyc, 0, rows_k, row_ok, cols, col_ok, N, Nk, Nv, Nf, K, V,
                                            INLINE, EVEN)
    for j in range(0, L):
        if PREFETCH:
            kt, vt, ft, dyt = nk, nv, nf, ndy
            nxt = tl.minimum(j + 1, n_steps - 1 - t0)              # the last step re-reads itself
            nk, nv, nf, ndy = _recompute_inputs(kc, vc, fc, dyc, nxt, rows_k, row_ok, cols, col_ok, N, Nk, Nv, Nf,
                                                K, V, INLINE, EVEN)
        else:
            kt, vt, ft, dyt = _recompute_inputs(kc, vc, fc, dyc, j, rows_k, row_ok, cols, col_ok, N, Nk, Nv, Nf,
                                                K, V, INLINE, EVEN)
        tl.store(dst + j * TILE + in_tile, h)
        h = _forward_step(h, kt, vt, ft, w, wt, MATMUL, TANH_APPROX, EMULATE_BF16_DOT)
        if INLINE:
            _dq_step(h, dyt, dqc, j, True, Nq, K, rows_k, row_ok, DQ_ATOMIC)
    if not INLINE:
        tl.store(dst + L * TILE + in_tile, h)


@triton.jit
def _recompute_step(hr, rk, rv, rf, rdy, rc_base, r, r_last, dq_on, in_tile, rkc, rvc, rfc, rdyc, rdqc, rows_k,
                    row_ok, cols, col_ok, w, wt, N, Nq, Nk, Nv, Nf, K, V, TILE: tl.constexpr, INLINE: tl.constexpr,
                    MATMUL: tl.constexpr, TANH_APPROX: tl.constexpr, EVEN: tl.constexpr, DQ_ATOMIC: tl.constexpr,
                    EMULATE_BF16_DOT: tl.constexpr):
    """OVERLAP's recompute, one step: H_{t-1} (hr) into slot r, the inputs of slot r + 1 loaded ahead
    (clamped to r_last, the sequence's last slot), H_t from the inputs loaded a step before (rk, rv,
    rf, rdy) and with INLINE its dq (where dq_on); rkc ... rdqc: the recomputed chunk's rows."""
    tl.store(rc_base + r * TILE + in_tile, hr)
    nk, nv, nf, ndy = _recompute_inputs(rkc, rvc, rfc, rdyc, tl.minimum(r + 1, r_last), rows_k, row_ok, cols, col_ok,
                                        N, Nk, Nv, Nf, K, V, INLINE, EVEN)
    h = _forward_step(hr, rk, rv, rf, w, wt, MATMUL, TANH_APPROX, EMULATE_BF16_DOT)
    if INLINE:
        _dq_step(h, rdy, rdqc, r, dq_on, Nq, K, rows_k, row_ok, DQ_ATOMIC)
    return h, nk, nv, nf, ndy


@triton.jit
def _prepare(hp, kt, vt, ft, w, wt, MATMUL: tl.constexpr, TANH_APPROX: tl.constexpr,
             EMULATE_BF16_DOT: tl.constexpr):
    """Off the chain: z_t from H_{t-1} (hp as the scratch holds it: a bf16 one enters a compiled bf16
    product without a round trip through fp32), then c = (1 - f)(1 - z²) and e = H_{t-1} - z_t."""
    hpf = hp.to(tl.float32)
    z = tanh(matmul(hpf if EMULATE_BF16_DOT else hp, w, wt, MATMUL, EMULATE_BF16_DOT) + kt[:, None] * vt[None, :],
             TANH_APPROX)
    return (1.0 - ft) * (1.0 - z * z), hpf - z


@triton.jit
def m2rnn_bwd_lean_kernel(
    q_ptr, k_ptr, v_ptr, w_ptr, f_ptr, cu_ptr, ckpt_ptr, dy_ptr, dhT_ptr,
    scr_ptr, scg_ptr, dq_ptr, dk_ptr, dv_ptr, df_ptr, dw_ptr, dh0_ptr,
    clip, S, TOK, N, Nq, Nk, Nv, Nw, Nf, K, V, RQ, RK, RV, RF,
    BLOCK_K: tl.constexpr, BV: tl.constexpr, CKPT: tl.constexpr, BULK: tl.constexpr,
    PREFETCH: tl.constexpr, OVERLAP: tl.constexpr, INLINE: tl.constexpr, MATMUL: tl.constexpr,
    TANH_APPROX: tl.constexpr, VARLEN: tl.constexpr, HAS_H0: tl.constexpr, HAS_DHT: tl.constexpr, CLIP: tl.constexpr,
    DW_MATMUL: tl.constexpr, DQ_ATOMIC: tl.constexpr, DK_ATOMIC: tl.constexpr,
    DV_ATOMIC: tl.constexpr, DF_ATOMIC: tl.constexpr, EVEN: tl.constexpr,
    EMULATE_BF16_DOT: tl.constexpr,
):
    TILE: tl.constexpr = BLOCK_K * BV
    pid_k = tl.program_id(0)
    b = tl.program_id(1)                        # the sequence
    n = tl.program_id(2)                        # the head
    prog = (n * tl.num_programs(1) + b) * tl.num_programs(0) + pid_k
    hq = n // (N // Nq)
    hk = n // (N // Nk)
    hv = n // (N // Nv)
    hw = n // (N // Nw)
    hf = n // (N // Nf)
    dq_base = dq_ptr + ((n % (N // Nq)) % RQ).to(tl.int64) * TOK * Nq * K
    dk_base = dk_ptr + ((n % (N // Nk)) % RK).to(tl.int64) * TOK * Nk * K
    dv_base = dv_ptr + ((n % (N // Nv)) % RV).to(tl.int64) * TOK * Nv * V
    df_base = df_ptr + ((n % (N // Nf)) % RF).to(tl.int64) * TOK * Nf

    rows = tl.arange(0, BLOCK_K)                                   # [BLOCK_K]
    rows_k = pid_k * BLOCK_K + rows
    row_ok = rows_k < K
    cols = tl.arange(0, BV)                                        # [BV]
    col_ok = cols < V
    if VARLEN:
        bos = tl.load(cu_ptr + b).to(tl.int64)
        n_steps = (tl.load(cu_ptr + b + 1).to(tl.int64) - bos).to(tl.int32)
    else:
        bos = b.to(tl.int64) * S
        n_steps = S
    w = load_w(w_ptr, hw, V, BV)                                   # [BV, BV]
    wt = tl.trans(w)

    tile_mask = row_ok[:, None] & col_ok[None, :]
    in_tile = rows[:, None] * BV + cols[None, :]                   # [BLOCK_K, BV] within a scratch tile
    st_offs = ((b.to(tl.int64) * N + n) * K + rows_k)[:, None] * V + cols[None, :]
    n_chunks = (S + CKPT - 1) // CKPT
    ck_base = ((b.to(tl.int64) * N + n) * n_chunks) * K * V
    ck_offs = rows_k[:, None] * V + cols[None, :]
    SPAN: tl.constexpr = (CKPT + 1) * TILE
    # H [CKPT + 1, BLOCK_K, BV]; with OVERLAP two of them: the chunk swept and the one recomputed meanwhile
    sc_prog = scr_ptr + prog.to(tl.int64) * ((1 + OVERLAP) * SPAN)
    sg_base = scg_ptr + prog.to(tl.int64) * ((2 - INLINE) * BULK * TILE)  # da [BULK, BLOCK_K, BV] ...
    se_base = sg_base + BULK * TILE                                # ... and g ⊙ (H_{t-1} - z) (not INLINE)
    blk = tl.arange(0, BULK)                                       # [BULK] steps of a block
    in_blk = blk[:, None, None] * TILE + in_tile[None, :, :]       # [BULK, BLOCK_K, BV]

    if HAS_DHT:
        dh = _load(dhT_ptr + st_offs, tile_mask, EVEN)
    else:
        dh = tl.zeros([BLOCK_K, BV], dtype=tl.float32)
    dw = tl.zeros([BV, BV], dtype=tl.float32)

    n_chunks_here = (n_steps + CKPT - 1) // CKPT
    if OVERLAP:
        # the last chunk before the sweep starts; every other chunk while the one after it is swept
        last = n_chunks_here - 1
        _recompute(ckpt_ptr, k_ptr, v_ptr, f_ptr, dy_ptr, dq_base, sc_prog + (last % 2) * SPAN, last,
                   tl.minimum(n_steps - last * CKPT, CKPT), bos, n_steps, ck_base + last * K * V + ck_offs,
                   rows_k, row_ok, cols, col_ok, tile_mask, in_tile, w, wt, hq, hk, hv, hf, n, N, Nq, Nk, Nv, Nf,
                   K, V, TILE, CKPT, PREFETCH, INLINE, MATMUL, TANH_APPROX, EVEN, DQ_ATOMIC, EMULATE_BF16_DOT)
    for ci in range(0, n_chunks_here):
        c = n_chunks_here - 1 - ci
        t0 = c * CKPT
        L = tl.minimum(n_steps - t0, CKPT)
        tl.debug_barrier()  # the previous chunk's blocks have read the scratch about to be reused

        if OVERLAP:
            # ---- 1. chunk c was recomputed during the previous sweep; chunk c - 1 is recomputed during
            # this one, one step per chain step, into the other buffer (at c = 0 chunk 0 again, unused:
            # its dq is not counted twice) ----
            sc_base = sc_prog + (c % 2) * SPAN
            rc_base = sc_prog + ((c + 1) % 2) * SPAN
            cr = tl.maximum(c - 1, 0)
            dq_on = c > 0
            r_last = n_steps - 1 - cr * CKPT                           # slots clamped into the sequence
            rt0 = bos + cr * CKPT
            rkc, rvc, rfc = _row(k_ptr, rt0, hk, Nk, K), _row(v_ptr, rt0, hv, Nv, V), _row(f_ptr, rt0, hf, Nf, 1)
            rdyc, rdqc = _row(dy_ptr, rt0, n, N, V), _row(dq_base, rt0, hq, Nq, K)
            hr = _load(ckpt_ptr + ck_base + cr * K * V + ck_offs, tile_mask, EVEN)
            rk, rv, rf, rdy = _recompute_inputs(rkc, rvc, rfc, rdyc, 0, rows_k, row_ok, cols, col_ok, N, Nk, Nv, Nf,
                                                K, V, INLINE, EVEN)
        else:
            # ---- 1. recompute the chunk forward from its checkpoint: H_{t-1} into slot j, the end into L ----
            sc_base = sc_prog
            _recompute(ckpt_ptr, k_ptr, v_ptr, f_ptr, dy_ptr, dq_base,
                       sc_base, c, L, bos, n_steps, ck_base + c * K * V + ck_offs,
                       rows_k, row_ok, cols, col_ok, tile_mask, in_tile, w, wt, hq, hk, hv, hf, n, N, Nq, Nk, Nv, Nf,
                       K, V, TILE, CKPT, PREFETCH, INLINE, MATMUL, TANH_APPROX, EVEN, DQ_ATOMIC, EMULATE_BF16_DOT)
            tl.debug_barrier()  # scratch written above is read below, possibly by other threads

        # the chunk's rows (_row): a step's loads and stores add its slot's offset only
        tok0 = bos + t0
        qc, kc, vc = _row(q_ptr, tok0, hq, Nq, K), _row(k_ptr, tok0, hk, Nk, K), _row(v_ptr, tok0, hv, Nv, V)
        fc, dyc, dfc = _row(f_ptr, tok0, hf, Nf, 1), _row(dy_ptr, tok0, n, N, V), _row(df_base, tok0, hf, Nf, 1)
        n_blocks = (L + BULK - 1) // BULK
        for bi in range(0, n_blocks):
            j0 = (n_blocks - 1 - bi) * BULK
            jn = tl.minimum(j0 + BULK, L)

            # ---- 2a. the chain over the block's steps, t descending ----
            # c = (1 - f)(1 - z²) and e = H_{t-1} - z_t of a step depend on the loaded H_{t-1} only,
            # so with PREFETCH=2 they are ready a step before the chain needs them
            if PREFETCH >= 1:
                kt, vt, ft, qt, dyt, hp = _sweep_inputs(qc, kc, vc, fc, dyc, sc_base, jn - 1, rows_k, row_ok,
                                                        cols, col_ok, in_tile, N, Nq, Nk, Nv, Nf, K, V, TILE, EVEN)
            if PREFETCH >= 2:
                cp, ep = _prepare(hp, kt, vt, ft, w, wt, MATMUL, TANH_APPROX, EMULATE_BF16_DOT)
                qp, dyp, fp = qt, dyt, ft
                kt, vt, ft, qt, dyt, hp = _sweep_inputs(qc, kc, vc, fc, dyc, sc_base, tl.maximum(jn - 2, j0),
                                                        rows_k, row_ok, cols, col_ok, in_tile, N, Nq, Nk, Nv, Nf,
                                                        K, V, TILE, EVEN)
            for jj in range(0, jn - j0):
                j = jn - 1 - jj
                if PREFETCH == 0:
                    kt, vt, ft, qt, dyt, hp = _sweep_inputs(qc, kc, vc, fc, dyc, sc_base, j, rows_k, row_ok,
                                                            cols, col_ok, in_tile, N, Nq, Nk, Nv, Nf, K, V, TILE,
                                                            EVEN)
                    cf, hz = _prepare(hp, kt, vt, ft, w, wt, MATMUL, TANH_APPROX, EMULATE_BF16_DOT)
                    q, dy, f = qt, dyt, ft
                elif PREFETCH == 1:
                    cf, hz = _prepare(hp, kt, vt, ft, w, wt, MATMUL, TANH_APPROX, EMULATE_BF16_DOT)
                    q, dy, f = qt, dyt, ft
                    kt, vt, ft, qt, dyt, hp = _sweep_inputs(qc, kc, vc, fc, dyc, sc_base, tl.maximum(j - 1, j0),
                                                            rows_k, row_ok, cols, col_ok, in_tile, N, Nq, Nk, Nv,
                                                            Nf, K, V, TILE, EVEN)
                else:
                    cf, hz, q, dy, f = cp, ep, qp, dyp, fp
                    cp, ep = _prepare(hp, kt, vt, ft, w, wt, MATMUL, TANH_APPROX, EMULATE_BF16_DOT)
                    qp, dyp, fp = qt, dyt, ft
                    kt, vt, ft, qt, dyt, hp = _sweep_inputs(qc, kc, vc, fc, dyc, sc_base, tl.maximum(j - 2, j0),
                                                            rows_k, row_ok, cols, col_ok, in_tile, N, Nq, Nk, Nv,
                                                            Nf, K, V, TILE, EVEN)
                # the chain: g, da, dH; da and g ⊙ (H_{t-1} - z) go to the block's scratch (INLINE: the
                # latter's sum, df_t, is reduced here, off the chain: dH does not wait for it)
                g = dh + q[:, None] * dy[None, :]
                if CLIP:
                    g = tl.minimum(tl.maximum(g, -clip), clip)
                da = g * cf
                tl.store(sg_base + (j - j0) * TILE + in_tile, da)
                if INLINE:
                    accumulate(dfc, j * Nf, tl.sum(tl.sum(g * hz, axis=1), axis=0), None, DF_ATOMIC)
                else:
                    tl.store(se_base + (j - j0) * TILE + in_tile, g * hz)
                dh = f * g + matmul(da, wt, w, MATMUL, EMULATE_BF16_DOT)
                if OVERLAP:
                    # an independent chain beside this one: step L - 1 - j of chunk cr's recompute
                    r = L - 1 - j
                    hr, rk, rv, rf, rdy = _recompute_step(hr, rk, rv, rf, rdy, rc_base, r, r_last, dq_on, in_tile,
                                                          rkc, rvc, rfc, rdyc, rdqc, rows_k, row_ok, cols, col_ok, w,
                                                          wt, N, Nq, Nk, Nv, Nf, K, V, TILE, INLINE, MATMUL,
                                                          TANH_APPROX, EVEN, DQ_ATOMIC, EMULATE_BF16_DOT)
            tl.debug_barrier()  # the block's scratch is read below in another layout

            # ---- 2b. the block's gradients, all its steps at once ----
            jb = j0 + blk                                                 # [BULK] chunk slots
            real = jb < jn
            real3 = real[:, None, None]
            rk2 = real[:, None] & row_ok[None, :]                         # [BULK, BLOCK_K]
            rv2 = real[:, None] & col_ok[None, :]                         # [BULK, BV]
            h_prev = tl.load(sc_base + jb[:, None, None] * TILE + in_tile[None, :, :], mask=real3,
                             other=0.0).to(tl.float32)
            da_b = tl.load(sg_base + in_blk, mask=real3, other=0.0).to(tl.float32)
            k_offs = (jb * (Nk * K))[:, None] + rows_k[None, :]            # [BULK, BLOCK_K] from the chunk's rows
            v_offs = (jb * (Nv * V))[:, None] + cols[None, :]              # [BULK, BV]
            k_b = tl.load(kc + k_offs, mask=rk2, other=0.0).to(tl.float32)
            v_b = tl.load(vc + v_offs, mask=rv2, other=0.0).to(tl.float32)
            dw += dot(tl.trans(tl.reshape(h_prev, (BULK * BLOCK_K, BV))),
                      tl.reshape(da_b, (BULK * BLOCK_K, BV)), DW_MATMUL, EMULATE_BF16_DOT)
            accumulate(_row(dk_base, tok0, hk, Nk, K), k_offs, tl.sum(da_b * v_b[:, None, :], axis=2), rk2, DK_ATOMIC)
            accumulate(_row(dv_base, tok0, hv, Nv, V), v_offs, tl.sum(da_b * k_b[:, :, None], axis=1), rv2, DV_ATOMIC)
            if not INLINE:
                dfe_b = tl.load(se_base + in_blk, mask=real3, other=0.0).to(tl.float32)
                accumulate(dfc, jb * Nf, tl.sum(tl.sum(dfe_b, axis=2), axis=1), real, DF_ATOMIC)
                # dq_t = H_t dy_t (H_t: the next slot)
                h_next = tl.load(sc_base + (jb + 1)[:, None, None] * TILE + in_tile[None, :, :], mask=real3,
                                 other=0.0).to(tl.float32)
                dy_b = tl.load(dyc + (jb * (N * V))[:, None] + cols[None, :], mask=rv2, other=0.0).to(tl.float32)
                accumulate(_row(dq_base, tok0, hq, Nq, K), (jb * (Nq * K))[:, None] + rows_k[None, :],
                           tl.sum(dy_b[:, None, :] * h_next, axis=2), rk2, DQ_ATOMIC)
            tl.debug_barrier()  # the next block overwrites the scratch read above

        if OVERLAP:
            # a partial chunk (the last) left chunk cr's recompute short: its remaining steps, its end
            for r in range(L, CKPT):
                hr, rk, rv, rf, rdy = _recompute_step(hr, rk, rv, rf, rdy, rc_base, r, r_last, dq_on, in_tile,
                                                      rkc, rvc, rfc, rdyc, rdqc, rows_k, row_ok, cols, col_ok, w, wt,
                                                      N, Nq, Nk, Nv, Nf, K, V, TILE, INLINE, MATMUL, TANH_APPROX, EVEN,
                                                      DQ_ATOMIC, EMULATE_BF16_DOT)
            if not INLINE:
                tl.store(rc_base + CKPT * TILE + in_tile, hr)

    # dW partial of this program, reduced over programs and shared heads by the launcher
    tl.store(dw_ptr + prog.to(tl.int64) * V * V + cols[:, None] * V + cols[None, :], dw,
             mask=col_ok[:, None] & col_ok[None, :])
    if HAS_H0:
        tl.store(dh0_ptr + st_offs, dh.to(dh0_ptr.dtype.element_ty), mask=tile_mask)


def launch_backward(problem: Problem, config: KernelConfig, x: Inputs, ckpt: torch.Tensor,
                    dy: torch.Tensor, dh_T: Optional[torch.Tensor], *,
                    gradient_clipping: Optional[float] = None,
                    poison: bool = False, info: Optional[dict] = None,
                    compile_only: bool = False) -> dict[str, torch.Tensor]:
    """Gradients {"q", "k", "v", "W", "f"(, "h0")} in the inputs' dtypes and shapes (as bwd.py)."""
    p = config.as_dict()
    layout = SPEC.layout(problem, config)
    grads = backward_buffers(SPEC, problem, config, x, ckpt, poison=poison)
    ck, bm, bv = p["CKPT"], layout.bm, layout.bv
    dev = x.q.device
    # the scratch's dtype (SCRATCH): what the stores round to, the loads read back in fp32
    sdt = {"fp32": torch.float32, "bf16": torch.bfloat16}[p["SCRATCH"]]
    scratch = torch.empty((layout.programs, 1 + p["OVERLAP"], ck + 1, bm, bv), dtype=sdt, device=dev)
    scratch_g = torch.empty((layout.programs, 2 - p["INLINE"], p["BULK"], bm, bv), dtype=sdt, device=dev)
    cont = [t.contiguous() for t in (x.q, x.k, x.v, x.W, x.f)]
    cu = x.cu_seqlens if x.cu_seqlens is not None else cont[0]
    dy = dy.contiguous()
    dh_T_ = dh_T.contiguous() if dh_T is not None else dy
    plan, bufs = grads.plan, grads.bufs
    even = not problem.is_varlen and problem.K % p["BLOCK_K"] == 0 and problem.V == bv
    kernel = launcher(m2rnn_bwd_lean_kernel, layout.grid, compile_only)(
        *cont, cu, ckpt.contiguous(), dy, dh_T_,
        scratch, scratch_g, bufs["q"], bufs["k"], bufs["v"], bufs["f"], grads.dw_part,
        grads.dh0 if grads.dh0 is not None else grads.dw_part,
        float(gradient_clipping) if gradient_clipping is not None else 0.0,
        problem.S, problem.tokens, problem.N, problem.Nq, problem.Nk, problem.Nv, problem.Nw, problem.Nf,
        problem.K, problem.V, plan["q"][0], plan["k"][0], plan["v"][0], plan["f"][0],
        BLOCK_K=p["BLOCK_K"], BV=bv, CKPT=ck, BULK=p["BULK"],
        PREFETCH=p["PREFETCH"], OVERLAP=p["OVERLAP"], INLINE=p["INLINE"], MATMUL=p["MATMUL"], TANH_APPROX=p["TANH"] == "approx",
        VARLEN=problem.is_varlen, HAS_H0=x.h0 is not None, HAS_DHT=dh_T is not None,
        CLIP=gradient_clipping is not None, DW_MATMUL=SPEC.dw_matmul(config),
        DQ_ATOMIC=plan["q"][1], DK_ATOMIC=plan["k"][1], DV_ATOMIC=plan["v"][1], DF_ATOMIC=plan["f"][1],
        EVEN=even, EMULATE_BF16_DOT=interpreting(),
        num_warps=p["num_warps"], num_stages=p["num_stages"], maxnreg=p["MAXNREG"] or None,
    )
    compiled_info(kernel, info)
    return grads.finish()
