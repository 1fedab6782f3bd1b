"""Forward M²RNN kernel template: one program owns BLOCK_K rows of the state of
BLOCK_B batch elements (or packed sequences) of one head, and walks time.

Per step (DESIGN.md): x = k vᵀ, z = tanh(H W + x), H = f H + (1 - f) z, y = qᵀ H.
Rows of H are independent RNNs sharing W, so K may be split across programs;
y then sums over programs with fp32 atomics into a zeroed buffer.

Only H W, tanh and the blend are on the step's dependency chain; the loads of
k, v, q, f for later steps are issued PREFETCH steps ahead so their latency
hides behind the chain.

Tunable parameters (see PARAMS): BLOCK_K, BLOCK_B, PREFETCH, MATMUL, TANH,
num_warps, num_stages. The state is always kept in fp32.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import triton
import triton.language as tl

from m2tune.inputs import Inputs
from m2tune.problem import KernelConfig, Problem

NAME = "m2rnn_fwd"

# name -> allowed values (first one is the default). Data, not code: search
# spaces narrow these, check() rejects what a problem cannot run.
PARAMS: dict[str, tuple[Any, ...]] = {
    "BLOCK_K": (16, 1, 2, 4, 8, 32, 64, 128),
    "BLOCK_B": (1, 2, 4, 8),
    "PREFETCH": (1, 0, 2),
    # how H @ W is formed: broadcast multiply-add in fp32 on the FMA units, or
    # tl.dot at a given input precision (bf16 rounds H for the product only)
    # (tf32x3: three tf32 passes, near-fp32 accuracy on tensor cores)
    "MATMUL": ("fma", "dot_ieee", "dot_tf32x3", "dot_tf32", "dot_bf16"),
    # exact: fp32 formula from exp; approx: PTX tanh.approx.f32 (GPU only)
    "TANH": ("exact", "approx"),
    "num_warps": (1, 2, 4, 8),
    "num_stages": (1, 2, 3),
}
DEFAULT = KernelConfig.of(NAME, {name: values[0] for name, values in PARAMS.items()})

# Rough register budget per thread used to reject configs that would spill
# heavily. The fp32 state tile, W and the fma intermediate dominate.
_MAX_REGS_PER_THREAD = 255


@triton.jit
def _tanh(x, APPROX: tl.constexpr):
    if APPROX:
        return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [x],
                                         dtype=tl.float32, is_pure=True, pack=1)
    else:
        # exp of a non-positive argument never overflows; absolute error is a
        # few ulp of 1, which is what the Frobenius-relative check measures
        e = tl.exp(-2.0 * tl.abs(x))
        t = (1.0 - e) / (1.0 + e)
        return tl.where(x < 0, -t, t)


@triton.jit
def _dot(a, b, MATMUL: tl.constexpr, EMULATE_BF16_DOT: tl.constexpr):
    if MATMUL == "dot_ieee":
        return tl.dot(a, b, input_precision="ieee")
    elif MATMUL == "dot_tf32x3":
        return tl.dot(a, b, input_precision="tf32x3")
    elif MATMUL == "dot_tf32":
        return tl.dot(a, b, input_precision="tf32")
    elif EMULATE_BF16_DOT:
        # the interpreter has no bf16 dot: bf16 products are exact in fp32
        return tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32),
                      input_precision="ieee")
    else:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))


@triton.jit
def _matmul(a, b, bt, MATMUL: tl.constexpr, EMULATE_BF16_DOT: tl.constexpr):
    # a [BM, BV] @ b [BV, BV]; bt = bᵀ (fma contracts the last axis: Triton rewrites the axis-1 form
    # sum(a[:, :, None] * b[None, :, :], 1) into a tf32 tl.dot)
    if MATMUL == "fma":
        return tl.sum(a[:, None, :] * bt[None, :, :], axis=2)
    else:
        return _dot(a, b, MATMUL, EMULATE_BF16_DOT)


@triton.jit
def _tile(pid_k, pid_b, NSEQ, K, V, BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr, BV: tl.constexpr):
    """Rows of the state this program owns: BLOCK_B sequences x BLOCK_K rows, flattened."""
    BM: tl.constexpr = BLOCK_B * BLOCK_K
    r = tl.arange(0, BM)
    rows_b = pid_b * BLOCK_B + r // BLOCK_K                      # [BM] batch / sequence of each row
    rows_k = pid_k * BLOCK_K + r % BLOCK_K                       # [BM] state row
    row_ok = (rows_b < NSEQ) & (rows_k < K)
    cols = tl.arange(0, BV)                                      # [BV]
    col_ok = cols < V
    bb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)                 # [BLOCK_B] for y
    b_ok = bb < NSEQ
    return r, rows_b, rows_k, row_ok, cols, col_ok, bb, b_ok


@triton.jit
def _sequences(cu_ptr, rows_b, row_ok, bb, b_ok, S, VARLEN: tl.constexpr):
    """Start token and length of every row's sequence ([BM]) and every y row's ([BLOCK_B])."""
    if VARLEN:
        bos = tl.load(cu_ptr + rows_b, mask=row_ok, other=0).to(tl.int64)
        seqlen = tl.load(cu_ptr + rows_b + 1, mask=row_ok, other=0).to(tl.int64) - bos
        bos_y = tl.load(cu_ptr + bb, mask=b_ok, other=0).to(tl.int64)
        len_y = tl.load(cu_ptr + bb + 1, mask=b_ok, other=0).to(tl.int64) - bos_y
        n_steps = tl.max(len_y, axis=0)
    else:
        bos = rows_b.to(tl.int64) * S
        seqlen = tl.where(row_ok, S, 0).to(tl.int64)
        bos_y = bb.to(tl.int64) * S
        len_y = tl.where(b_ok, S, 0).to(tl.int64)
        n_steps = S
    return bos, seqlen, bos_y, len_y, n_steps


@triton.jit
def _load_w(w_ptr, hw, V, BV: tl.constexpr):
    # W of this head, [BV, BV], zero-padded so padded columns of H stay zero
    wi = tl.arange(0, BV)
    return tl.load(w_ptr + hw * V * V + wi[:, None] * V + wi[None, :],
                   mask=(wi[:, None] < V) & (wi[None, :] < V), other=0.0).to(tl.float32)


@triton.jit
def _accumulate(ptr, offs, val, mask, ATOMIC: tl.constexpr):
    # add into a buffer several programs share (fp32 atomics), or store when this program is its only writer
    if ATOMIC:
        tl.atomic_add(ptr + offs, val, mask=mask, sem="relaxed")
    else:
        tl.store(ptr + offs, val.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _load_step(k_ptr, v_ptr, q_ptr, f_ptr, tok, valid, rows_k, cols, col_ok,
               hk, hv, hq, hf, Nq, Nk, Nv, Nf, K, V):
    # tok, valid, rows_k: [BM]; cols, col_ok: [BV]
    kt = tl.load(k_ptr + (tok * Nk + hk) * K + rows_k, mask=valid, other=0.0).to(tl.float32)
    qt = tl.load(q_ptr + (tok * Nq + hq) * K + rows_k, mask=valid, other=0.0).to(tl.float32)
    ft = tl.load(f_ptr + tok * Nf + hf, mask=valid, other=0.0).to(tl.float32)
    vt = tl.load(v_ptr + (tok * Nv + hv)[:, None] * V + cols[None, :],
                 mask=valid[:, None] & col_ok[None, :], other=0.0).to(tl.float32)  # [BM, BV]
    return kt, vt, qt, ft


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

    r, rows_b, rows_k, row_ok, cols, col_ok, bb, b_ok = _tile(pid_k, pid_b, NSEQ, K, V,
                                                              BLOCK_K, BLOCK_B, BV)
    bos, seqlen, bos_y, len_y, n_steps = _sequences(cu_ptr, rows_b, row_ok, bb, b_ok, S, VARLEN)
    w = _load_w(w_ptr, hw, V, BV)                                 # [BV, BV]
    wt = tl.trans(w)                                             # [BV(j), BV(i)], for fma

    st_offs = ((rows_b.to(tl.int64) * N + n) * K + rows_k)[:, None] * V + cols[None, :]  # [BM, BV]
    st_mask = row_ok[:, None] & col_ok[None, :]
    if HAS_H0:
        h = tl.load(h0_ptr + st_offs, mask=st_mask, other=0.0).to(tl.float32)
    else:
        h = tl.zeros([BM, BV], dtype=tl.float32)

    if PREFETCH >= 1:
        nk, nv, nq, nf = _load_step(k_ptr, v_ptr, q_ptr, f_ptr, bos, row_ok & (0 < seqlen),
                                    rows_k, cols, col_ok, hk, hv, hq, hf, Nq, Nk, Nv, Nf, K, V)
    if PREFETCH >= 2:
        nk2, nv2, nq2, nf2 = _load_step(k_ptr, v_ptr, q_ptr, f_ptr, bos + 1, row_ok & (1 < seqlen),
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
            kt, vt, qt, ft = _load_step(k_ptr, v_ptr, q_ptr, f_ptr, bos + t, row_ok & (t < seqlen),
                                        rows_k, cols, col_ok, hk, hv, hq, hf, Nq, Nk, Nv, Nf, K, V)
        elif PREFETCH == 1:
            kt, vt, qt, ft = nk, nv, nq, nf
            nk, nv, nq, nf = _load_step(k_ptr, v_ptr, q_ptr, f_ptr, bos + t + 1,
                                        row_ok & (t + 1 < seqlen), rows_k, cols, col_ok,
                                        hk, hv, hq, hf, Nq, Nk, Nv, Nf, K, V)
        else:
            kt, vt, qt, ft = nk, nv, nq, nf
            nk, nv, nq, nf = nk2, nv2, nq2, nf2
            nk2, nv2, nq2, nf2 = _load_step(k_ptr, v_ptr, q_ptr, f_ptr, bos + t + 2,
                                            row_ok & (t + 2 < seqlen), rows_k, cols, col_ok,
                                            hk, hv, hq, hf, Nq, Nk, Nv, Nf, K, V)

        # ---- the step's dependency chain: H W, tanh, blend ----
        hw_ = _matmul(h, w, wt, MATMUL, EMULATE_BF16_DOT)       # [BM, BV]
        z = _tanh(hw_ + kt[:, None] * vt, TANH_APPROX)           # [BM, BV]
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
        _accumulate(y_ptr, y_offs, yb, y_mask, SPLIT_K)

    tl.store(hT_ptr + st_offs, h.to(hT_ptr.dtype.element_ty), mask=st_mask)


def _interpreting() -> bool:
    # Triton 3.6's interpreter multiplies the bit patterns of bf16 operands in
    # tl.dot (numpy has no bf16), so there the bf16 dot is emulated exactly.
    return bool(triton.knobs.runtime.interpret)


def _bv(problem: Problem, config: KernelConfig) -> int:
    bv = triton.next_power_of_2(problem.V)
    # tl.dot needs an inner dimension of at least 16
    return max(bv, 16) if config["MATMUL"] != "fma" else bv


def common_reason(problem: Problem, config: KernelConfig, name: str, params_allowed: dict,
                  *, interpreter: bool) -> str | None:
    """Checks every M²RNN template shares: names and values, blocks, tanh, precision."""
    params = config.as_dict()
    if config.variant != name:
        return f"config is for variant {config.variant!r}, not {name!r}"
    missing = sorted(set(params_allowed) - set(params))
    unknown = sorted(set(params) - set(params_allowed))
    if missing or unknown:
        return f"parameters missing {missing} / unknown {unknown}"
    for key, value in params.items():
        if value not in params_allowed[key]:
            return f"{key}={value!r} not in {list(params_allowed[key])}"
    bk, bb, mm = params["BLOCK_K"], params["BLOCK_B"], params["MATMUL"]
    if bk > 1 and bk // 2 >= problem.K:
        return f"BLOCK_K={bk} is at least twice K={problem.K}: same work as a smaller block"
    if bb > 1 and bb // 2 >= problem.B:
        return f"BLOCK_B={bb} is at least twice the {problem.B} sequences: same work as a smaller block"
    if params["TANH"] == "approx" and interpreter:
        return "TANH=approx is PTX (tanh.approx.f32) and cannot run in the Triton interpreter"
    if problem.dtype == "float32" and mm in ("dot_tf32", "dot_bf16"):
        return f"MATMUL={mm} rounds H below the fp32 problem's precision"
    return None


def register_reason(per_thread: float, bm: int, bv: int, config: KernelConfig) -> str | None:
    """Reject a tile whose estimated live registers per thread would spill heavily."""
    if per_thread > _MAX_REGS_PER_THREAD:
        return (f"about {math.ceil(per_thread)} registers per thread for a {bm}x{bv} tile "
                f"({config['MATMUL']}, {config['num_warps']} warps) exceeds {_MAX_REGS_PER_THREAD}")
    return None


def check(problem: Problem, config: KernelConfig, *, interpreter: bool = False) -> str | None:
    """Why `config` cannot run `problem` (None if it can), decided before compiling."""
    reason = common_reason(problem, config, NAME, PARAMS, interpreter=interpreter)
    if reason:
        return reason
    params = config.as_dict()
    bk, bb, mm = params["BLOCK_K"], params["BLOCK_B"], params["MATMUL"]
    bv = _bv(problem, config)
    threads = 32 * params["num_warps"]
    bm = bb * bk
    if mm != "fma" and bm * bv < threads // 2:
        return f"tile {bm}x{bv} too small for tl.dot with {params['num_warps']} warps"
    per_thread = (2 * bm * bv + bv * bv + 6 * bm) / threads    # state, z, W, prefetched vectors
    per_thread *= 1 + params["PREFETCH"] / 2                     # each prefetched step is held live
    if mm == "fma":
        per_thread += bm * bv * bv / threads                     # [BM, BV, BV] products
    return register_reason(per_thread, bm, bv, config)


def compiled_info(kernel: Any, info: dict | None) -> None:
    """Record what the compiler made of a launch (GPU only; the interpreter compiles nothing).

    `kernel` is what `jit_fn[grid](...)` returns: a CompiledKernel on the GPU, None in the
    interpreter. The tuner stores these with each trial; the performance model uses them for
    occupancy (registers and shared memory per program).
    """
    if info is None or kernel is None or not hasattr(kernel, "n_regs"):
        return
    info.update(n_regs=int(kernel.n_regs), n_spills=int(kernel.n_spills),
                shared=int(kernel.metadata.shared), num_warps=int(kernel.metadata.num_warps))


def launch(problem: Problem, config: KernelConfig, x: Inputs,
           y: torch.Tensor, h_T: torch.Tensor, *, ckpt_every: int = 0,
           info: dict | None = None) -> torch.Tensor | None:
    """Run the forward pass, writing every element of y (like v, N heads) and h_T (fp32 or any float).

    ckpt_every > 0 (backward, kernel_variants/m2rnn_bwd.py): also return the fp32 state at the
    start of every chunk of ckpt_every steps, shape (num_seqs, N, cdiv(S, ckpt_every), K, V).
    info: a dict to receive the compiled kernel's n_regs, n_spills, shared (bytes), num_warps.
    """
    p = config.as_dict()
    nseq = problem.B
    split_k = triton.cdiv(problem.K, p["BLOCK_K"]) > 1
    # K split across programs: y is a sum over programs, kept in fp32 with atomics
    y_acc = torch.zeros(y.shape, dtype=torch.float32, device=y.device) if split_k else y
    grid = (triton.cdiv(problem.K, p["BLOCK_K"]), triton.cdiv(nseq, p["BLOCK_B"]), problem.N)
    cont = [t.contiguous() for t in (x.q, x.k, x.v, x.W, x.f)]
    h0 = x.h0.contiguous() if x.h0 is not None else cont[0]     # unused pointer when no h0
    cu = x.cu_seqlens if x.cu_seqlens is not None else cont[0]   # unused pointer when not varlen
    ckpt = None
    if ckpt_every:  # backward checkpoints; chunks past a sequence's end stay unwritten
        ckpt = torch.empty((nseq, problem.N, triton.cdiv(problem.S, ckpt_every), problem.K, problem.V),
                           dtype=torch.float32, device=y.device)
    kernel = m2rnn_fwd_kernel[grid](
        *cont, h0, cu, y_acc, h_T, ckpt if ckpt is not None else y_acc,
        nseq, problem.S, problem.N, problem.Nq, problem.Nk, problem.Nv, problem.Nw, problem.Nf,
        problem.K, problem.V,
        BLOCK_K=p["BLOCK_K"], BLOCK_B=p["BLOCK_B"], BV=_bv(problem, config),
        PREFETCH=p["PREFETCH"], MATMUL=p["MATMUL"], TANH_APPROX=p["TANH"] == "approx",
        VARLEN=problem.is_varlen, HAS_H0=x.h0 is not None, SPLIT_K=split_k,
        EMULATE_BF16_DOT=_interpreting(), CKPT=ckpt_every,
        num_warps=p["num_warps"], num_stages=p["num_stages"],
    )
    compiled_info(kernel, info)
    if split_k:
        y.copy_(y_acc)
    return ckpt
