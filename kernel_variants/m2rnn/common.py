"""The `@triton.jit` pieces every M²RNN kernel is built from, and what launchers share.

Shape tags: BM = BLOCK_B × BLOCK_K state rows of one program, BV = padded V (spec.padded_v).
Each piece is inlined by Triton into the kernel that calls it; none of them is a kernel itself.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import triton
import triton.language as tl


@triton.jit
def tanh(x, APPROX: tl.constexpr):
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
def bf16_rne(a):
    """fp32 rounded to the nearest bf16 value (ties to even), kept in fp32: what a GPU's fp32 -> bf16
    conversion does. The interpreter's own conversion truncates (Triton 3.6, measured), which drifts
    a recurrence that rounds its state operand every step; the emulated products use this instead."""
    bits = a.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def dot(a, b, MATMUL: tl.constexpr, EMULATE_BF16_DOT: tl.constexpr):
    if MATMUL == "dot_ieee":
        return tl.dot(a, b, input_precision="ieee")
    elif MATMUL == "dot_tf32x3":
        return tl.dot(a, b, input_precision="tf32x3")
    elif MATMUL == "dot_tf32":
        return tl.dot(a, b, input_precision="tf32")
    elif MATMUL == "dot_bf16x2":
        # a split into bf16 high and low halves, two bf16 products accumulated in fp32: a keeps 16
        # mantissa bits, b is rounded to bf16 (exact for a bf16 W: bf16 problems only)
        if EMULATE_BF16_DOT:
            a_hi = bf16_rne(a)
            b32 = bf16_rne(b)
            return (tl.dot(a_hi, b32, input_precision="ieee")
                    + tl.dot(bf16_rne(a - a_hi), b32, input_precision="ieee"))
        else:
            a_hi = a.to(tl.bfloat16)
            a_lo = (a - a_hi.to(tl.float32)).to(tl.bfloat16)
            b16 = b.to(tl.bfloat16)
            return tl.dot(a_lo, b16, tl.dot(a_hi, b16))
    elif EMULATE_BF16_DOT:
        # the interpreter has no bf16 dot: bf16 products are exact in fp32, operands rounded as a GPU does
        return tl.dot(bf16_rne(a), bf16_rne(b), input_precision="ieee")
    else:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))


@triton.jit
def matmul(a, b, bt, MATMUL: tl.constexpr, EMULATE_BF16_DOT: tl.constexpr):
    # a [BM, BV] @ b [BV, BV]; bt = bᵀ (fma contracts the last axis: Triton rewrites the axis-1 form
    # sum(a[:, :, None] * b[None, :, :], 1) into a tf32 tl.dot)
    if MATMUL == "fma":
        return tl.sum(a[:, None, :] * bt[None, :, :], axis=2)
    else:
        return dot(a, b, MATMUL, EMULATE_BF16_DOT)


@triton.jit
def tile(pid_k, pid_b, NSEQ, K, V, BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr, BV: tl.constexpr):
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
def sequences(cu_ptr, rows_b, row_ok, bb, b_ok, S, VARLEN: tl.constexpr):
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
def load_w(w_ptr, hw, V, BV: tl.constexpr):
    # W of this head, [BV, BV], zero-padded so padded columns of H stay zero
    wi = tl.arange(0, BV)
    return tl.load(w_ptr + hw * V * V + wi[:, None] * V + wi[None, :],
                   mask=(wi[:, None] < V) & (wi[None, :] < V), other=0.0).to(tl.float32)


@triton.jit
def accumulate(ptr, offs, val, mask, ATOMIC: tl.constexpr):
    # add into a buffer several programs share (fp32 atomics), or store when this program is its only writer
    if ATOMIC:
        tl.atomic_add(ptr + offs, val, mask=mask, sem="relaxed")
    else:
        tl.store(ptr + offs, val.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def load_step(k_ptr, v_ptr, q_ptr, f_ptr, tok, valid, rows_k, cols, col_ok,
              hk, hv, hq, hf, Nq, Nk, Nv, Nf, K, V):
    # tok, valid, rows_k: [BM]; cols, col_ok: [BV]
    kt = tl.load(k_ptr + (tok * Nk + hk) * K + rows_k, mask=valid, other=0.0).to(tl.float32)
    qt = tl.load(q_ptr + (tok * Nq + hq) * K + rows_k, mask=valid, other=0.0).to(tl.float32)
    ft = tl.load(f_ptr + tok * Nf + hf, mask=valid, other=0.0).to(tl.float32)
    vt = tl.load(v_ptr + (tok * Nv + hv)[:, None] * V + cols[None, :],
                 mask=valid[:, None] & col_ok[None, :], other=0.0).to(tl.float32)  # [BM, BV]
    return kt, vt, qt, ft


def interpreting() -> bool:
    # Triton 3.6's interpreter multiplies the bit patterns of bf16 operands in
    # tl.dot (numpy has no bf16), so there the bf16 dot is emulated exactly.
    return bool(triton.knobs.runtime.interpret)


def compiled_info(kernel: Any, info: Optional[dict]) -> None:
    """Record what the compiler made of a launch (GPU only; the interpreter compiles nothing).

    `kernel` is what `jit_fn[grid](...)` returns: a CompiledKernel on the GPU, None in the
    interpreter. The tuner stores these with each trial; the performance model uses them for
    occupancy (registers and shared memory per program).
    """
    if info is None or kernel is None or not hasattr(kernel, "n_regs"):
        return
    info.update(n_regs=int(kernel.n_regs), n_spills=int(kernel.n_spills),
                shared=int(kernel.metadata.shared), num_warps=int(kernel.metadata.num_warps))


def launcher(kernel: Any, grid: tuple, compile_only: bool) -> Callable:
    """`kernel[grid]`, or with compile_only Triton's warmup: the kernel compiled into Triton's cache
    and not launched (compiling a step's kernels ahead of their first launch; the tensors may then
    be meta tensors: only their dtypes and shapes matter)."""
    if compile_only:
        return functools.partial(kernel.warmup, grid=grid)
    return kernel[grid]
