"""The backward kernels (kernel_variants/m2rnn/bwd.py, bwd_lean.py) against autograd through the
float64 reference.

Forward with checkpoints (fwd.launch(..., ckpt_every=CKPT)), then launch_backward; every
gradient must match torch.autograd on the naive reference (m2rnn_reference) in float64 to a relative
Frobenius error below 1e-4 (fp32 inputs). Buffers the kernel must overwrite are NaN-poisoned.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")   # before any kernel module is imported

from m2tune import variants                                      # noqa: E402
from m2tune.inputs import Inputs, make_inputs                    # noqa: E402
from m2tune.kernel_variants.m2rnn.naive import m2rnn_reference   # noqa: E402
from m2tune.problem import Problem, shape                        # noqa: E402

FWD, BWD, LEAN = variants.spec("m2rnn_fwd"), variants.spec("m2rnn_bwd"), variants.spec("m2rnn_bwd_lean")
fwd, bwd = variants.load("m2rnn_fwd"), variants.load("m2rnn_bwd")

INTERPRETER = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
NAMES = ("q", "k", "v", "W", "f", "h0")
CLIP = 0.05


def cfg(**kw):
    return BWD.DEFAULT.with_params(**kw)


def lean(**kw):
    return LEAN.DEFAULT.with_params(**kw)


def _cast(x: Inputs, dtype: torch.dtype) -> Inputs:
    return Inputs(*(t.to(dtype) for t in (x.q, x.k, x.v, x.W, x.f)),
                  x.h0.float() if x.h0 is not None else None, x.cu_seqlens)


def reference_grads(x: Inputs, dy, dh_T, clip):
    """y, h_T and the float64 autograd gradients of <y, dy> + <h_T, dh_T>."""
    leaves = {n: getattr(x, n).double().requires_grad_() for n in NAMES if getattr(x, n) is not None}
    y, h_T = m2rnn_reference(*(leaves.get(n) for n in NAMES), cu_seqlens=x.cu_seqlens,
                             gradient_clipping=clip)
    loss = (y * dy.double()).sum()
    if dh_T is not None:
        loss = loss + (h_T * dh_T.double()).sum()
    loss.backward()
    return y.detach(), h_T.detach(), {n: t.grad for n, t in leaves.items()}


def run_case(problem, config, *, clip=None, dh_T=True, seed=0, device="cpu", dtype=torch.float32):
    """The backward kernel of `config` (either family) on fresh inputs: relative error per gradient."""
    assert variants.spec(config.variant).check(problem, config, interpreter=INTERPRETER) is None
    x = _cast(make_inputs(problem, seed=seed, device=device), dtype)
    g = torch.Generator().manual_seed(seed + 100)
    rows, T = (1, problem.tokens) if problem.is_varlen else (problem.B, problem.S)
    dy = torch.randn(rows, T, problem.N, problem.V, generator=g).to(device, dtype)
    dhT = (torch.randn(problem.B, problem.N, problem.K, problem.V, generator=g).to(device)
           if dh_T else None)
    y_ref, hT_ref, ref = reference_grads(x, dy, dhT, clip)

    y = torch.full(y_ref.shape, float("nan"), dtype=dtype, device=device)
    h_T = torch.full(hT_ref.shape, float("nan"), dtype=torch.float32, device=device)
    fcfg = FWD.DEFAULT.with_params(BLOCK_K=8, MATMUL="fma")
    ckpt = fwd.launch(problem, fcfg, x, y, h_T, ckpt_every=config["CKPT"])
    assert ckpt.shape == (problem.B, problem.N, -(-problem.S // config["CKPT"]), problem.K, problem.V)
    grads = variants.load(config.variant).launch_backward(problem, config, x, ckpt, dy, dhT,
                                                          gradient_clipping=clip, poison=True)

    assert set(grads) == set(ref)
    errors = {}
    for n, want in ref.items():
        got = grads[n]
        src = getattr(x, n)
        assert got.shape == src.shape and got.dtype == src.dtype, (n, got.shape, got.dtype)
        assert torch.isfinite(got).all(), f"d{n} has NaN/Inf (unwritten or poisoned element)"
        errors[n] = ((got.double() - want).norm() / want.norm()).item()
    return errors, ref


def assert_close(errors, tol=1e-4):
    bad = {n: e for n, e in errors.items() if not e < tol}
    assert not bad, f"relative errors above {tol}: {bad} (all: {errors})"


# (id, problem, config, clip)
CASES = [
    # K split in two (dv, df, dW summed over programs), CKPT does not divide S, h0 + dh_T
    ("split-clip", Problem(B=2, S=20, K=16, V=8, Nv=2, Nw=2, Nf=2, dtype="float32", h0=True),
     cfg(CKPT=16, BLOCK_K=8, MATMUL="fma", PREFETCH=1), CLIP),
    ("split-noclip-p0", Problem(B=2, S=20, K=16, V=8, Nv=2, Nw=2, Nf=2, dtype="float32", h0=True),
     cfg(CKPT=16, BLOCK_K=8, MATMUL="fma", PREFETCH=0, SLOTS=1), None),
    # CKPT divides S; tensor-core path; z stored by the recompute
    ("divides-dot", Problem(B=2, S=32, K=16, V=8, Nv=2, Nw=2, Nf=2, dtype="float32"),
     cfg(CKPT=16, BLOCK_K=16, BLOCK_B=2, MATMUL="dot_ieee", PREFETCH=2, STORE_Z=1), CLIP),
    # paper-like sharing: one q/k head for all 4 heads; fewer copies than heads -> atomics
    ("shared-qk-atomic", Problem(B=1, S=18, K=16, V=8, Nq=1, Nk=1, Nv=4, Nw=4, Nf=4, dtype="float32"),
     cfg(CKPT=16, BLOCK_K=16, SLOTS=2, PREFETCH=1), CLIP),
    # ... one copy per head -> plain stores, copies summed by torch
    ("shared-qk-copies", Problem(B=1, S=18, K=16, V=8, Nq=1, Nk=1, Nv=4, Nw=4, Nf=4, dtype="float32",
                                 h0=True),
     cfg(CKPT=16, BLOCK_K=16, SLOTS=4, MATMUL="dot_ieee", PREFETCH=2), None),
    # mixed sharing, BLOCK_B=2 over 3 batch elements (a padded row block)
    ("shared-mix", Problem(B=3, S=12, K=8, V=8, Nq=2, Nk=1, Nv=4, Nw=1, Nf=2, dtype="float32", h0=True),
     cfg(CKPT=16, BLOCK_K=8, BLOCK_B=2, SLOTS=2, PREFETCH=1), CLIP),
    # varlen, 3 sequences, chunk boundaries per sequence, BLOCK_B mixes lengths, K split
    ("varlen-clip", Problem.varlen([5, 19, 11], K=16, V=8, Nv=2, Nw=2, Nf=1, h0=True, dtype="float32"),
     cfg(CKPT=16, BLOCK_K=8, BLOCK_B=2, PREFETCH=1), CLIP),
    ("varlen-dot", Problem.varlen([5, 19, 11], K=16, V=8, Nv=2, Nw=2, Nf=1, h0=True, dtype="float32"),
     cfg(CKPT=16, BLOCK_K=16, BLOCK_B=4, MATMUL="dot_ieee", PREFETCH=2, STORE_Z=1, num_warps=4), None),
    # odd sizes: K=24, V=12 (padded tiles), S=37 (three chunks, the last one short)
    ("odd", Problem(B=1, S=37, K=24, V=12, Nv=2, Nw=2, Nf=2, dtype="float32", h0=True),
     cfg(CKPT=16, BLOCK_K=32, MATMUL="dot_ieee", PREFETCH=1, num_warps=4), CLIP),
    # the lean family: chain-only step loop, gradients per block of BULK steps (INLINE, the default:
    # dq in the recompute and df in the chain step; INLINE=0: both in the blocks, as named below)
    # odd sizes: K=24 over two K blocks (padded rows), V=12 (padded columns), S=37 (three chunks, the
    # last short; blocks that do not divide the chunk), h0 and dh_T; SLOTS=1: dq, df added by both
    # heads and both K blocks into one copy (a dq counted twice would show)
    ("lean-odd", Problem(B=2, S=37, K=24, V=12, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2, dtype="float32", h0=True),
     lean(CKPT=16, BULK=4, SLOTS=1, num_warps=4), CLIP),
    ("lean-odd-noclip-p0-block", Problem(B=1, S=37, K=24, V=12, Nv=2, Nw=2, Nf=2, dtype="float32", h0=True),
     lean(CKPT=16, BULK=2, PREFETCH=0, SLOTS=1, INLINE=0, num_warps=4), None),
    # one block per chunk and a single-step block; tf32x3 products on the dot path
    ("lean-bulk-chunk", Problem(B=2, S=33, K=16, V=16, Nv=2, Nw=2, Nf=2, dtype="float32"),
     lean(CKPT=16, BULK=16, MATMUL="dot_tf32x3", num_warps=4), CLIP),
    ("lean-bulk-1", Problem(B=2, S=20, K=16, V=8, Nv=2, Nw=2, Nf=2, dtype="float32", h0=True),
     lean(CKPT=16, BULK=1, num_warps=4), CLIP),
    # shared heads: q, k one head for all; mixed sharing with atomics and with copies
    ("lean-shared-qk", Problem(B=1, S=18, K=16, V=8, Nq=1, Nk=1, Nv=4, Nw=4, Nf=4, dtype="float32", h0=True),
     lean(CKPT=16, BULK=4, SLOTS=2, num_warps=4), CLIP),
    ("lean-shared-mix", Problem(B=3, S=12, K=16, V=8, Nq=2, Nk=1, Nv=4, Nw=1, Nf=2, dtype="float32", h0=True),
     lean(CKPT=16, BULK=4, SLOTS=4, num_warps=4), None),
    # packed sequences of unequal lengths, one shorter than a block, one over two chunks
    ("lean-varlen-block", Problem.varlen([3, 21, 11], K=16, V=8, Nv=2, Nw=2, Nf=1, h0=True, dtype="float32"),
     lean(CKPT=16, BULK=4, INLINE=0, num_warps=4), CLIP),
    # OVERLAP: chunk c - 1 recomputed during chunk c's sweep into a second buffer; three chunks with
    # the last short (its sweep leaves the next chunk's recompute a tail), K split, h0, clipping ...
    ("lean-overlap-odd-block", Problem(B=2, S=37, K=24, V=12, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2, dtype="float32",
                                       h0=True),
     lean(CKPT=16, BULK=4, OVERLAP=1, PREFETCH=2, INLINE=0, num_warps=4), CLIP),
    # ... packed: a sequence of one partial chunk, one of two chunks, one of three; shared q, k; no
    # prefetch (INLINE: chunk 0's second recompute adds no dq, and none past a short sequence)
    ("lean-overlap-varlen", Problem.varlen([7, 21, 40], K=16, V=8, Nq=1, Nk=1, Nv=2, Nw=2, Nf=1, h0=True,
                                           dtype="float32"),
     lean(CKPT=16, BULK=2, OVERLAP=1, PREFETCH=0, num_warps=4), None),
]


@pytest.mark.parametrize("problem, config, clip", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_gradients_match_float64_autograd(problem, config, clip, device):
    # dh_T is given in most cases; None (zero) where the problem has h0=False and clips
    errors, _ = run_case(problem, config, clip=clip, dh_T=problem.h0 or clip is None, device=device)
    assert_close(errors)


def test_clipping_bites_at_the_chosen_threshold():
    """c=0.05 must change the reference gradients, or the clipped cases test nothing.

    dq = H_t dy_t does not depend on dH, so clipping leaves it alone."""
    problem = CASES[0][1]
    x = _cast(make_inputs(problem, seed=0), torch.float32)
    dy = torch.randn(problem.B, problem.S, problem.N, problem.V, generator=torch.Generator().manual_seed(1))
    _, _, clipped = reference_grads(x, dy, None, CLIP)
    _, _, free = reference_grads(x, dy, None, None)
    for n in ("k", "v", "W", "f", "h0"):
        change = ((clipped[n] - free[n]).norm() / free[n].norm()).item()
        assert change > 0.05, f"clipping at {CLIP} barely changes d{n} ({change:.2e})"


# dW-only: beside dot_tf32x3, as tuned; Triton 3.6 fails to compile dot_ieee + DW_MATMUL=dot_bf16 at
# BLOCK_B*BLOCK_K=16 (TritonGPURemoveLayoutConversions: "operand does not dominate this use")
@pytest.mark.parametrize("matmuls", [dict(MATMUL="dot_bf16"), dict(MATMUL="dot_tf32x3", DW_MATMUL="dot_bf16")],
                         ids=["all-bf16", "dW-only-bf16"])
def test_bf16_inputs_store_grads_in_bf16(matmuls, device):
    """R = 1 copy and K unsplit: the kernel writes bf16 gradients directly (NaN-poisoned first)."""
    problem = Problem(B=1, S=12, K=16, V=16, Nv=2, Nw=2, Nf=2, dtype="bfloat16")
    config = cfg(CKPT=16, BLOCK_K=16, SLOTS=1, **matmuls)
    errors, _ = run_case(problem, config, clip=CLIP, device=device, dtype=torch.bfloat16)
    assert_close(errors, tol=3e-2)


def test_lean_bf16_scratch_keeps_the_bf16_products_error(device):
    """SCRATCH=bf16 (H and da stored in bf16, which the bf16 products round them to anyway): every
    gradient within the bf16 bound, and no further from float64 than the fp32 scratch by more than
    the bf16 rounding of df's and dk/dv's terms. Two chunks, the last short, with OVERLAP (both H
    buffers bf16); shared q, k (atomics)."""
    problem = Problem(B=1, S=20, K=16, V=16, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2, dtype="bfloat16", h0=True)
    base = lean(CKPT=16, BULK=4, MATMUL="dot_bf16", SLOTS=1, OVERLAP=1, num_warps=4)
    fp32, _ = run_case(problem, base, clip=CLIP, device=device, dtype=torch.bfloat16)
    bf16, _ = run_case(problem, base.with_params(SCRATCH="bf16"), clip=CLIP, device=device, dtype=torch.bfloat16)
    assert_close(bf16, tol=3e-2)
    for name in bf16:
        assert bf16[name] <= fp32[name] + 1e-2, (name, bf16[name], fp32[name])


def test_bf16_scratch_only_with_bf16_products():
    problem = Problem(B=1, S=40, K=16, V=16, dtype="bfloat16")
    assert LEAN.check(problem, lean(MATMUL="dot_bf16", SCRATCH="bf16")) is None
    for params in (dict(MATMUL="dot_tf32"), dict(MATMUL="dot_bf16x2"), dict(MATMUL="dot_bf16", DW_MATMUL="dot_tf32")):
        why = LEAN.check(problem, lean(SCRATCH="bf16", **params))
        assert why is not None and "SCRATCH=bf16" in why, why


def test_forward_without_checkpoints_returns_none(device):
    problem = Problem(B=1, S=3, K=8, V=8, dtype="float32")
    x = _cast(make_inputs(problem, seed=0, device=device), torch.float32)
    y = torch.empty(1, 3, 1, 8, device=device)
    h_T = torch.empty(1, 1, 8, 8, device=device)
    assert fwd.launch(problem, FWD.DEFAULT.with_params(BLOCK_K=8), x, y, h_T) is None


def test_wrong_checkpoint_shape_is_refused():
    problem = Problem(B=1, S=20, K=8, V=8, dtype="float32")
    x = _cast(make_inputs(problem, seed=0), torch.float32)
    ckpt = torch.zeros(1, 1, 1, 8, 8)                  # made with ckpt_every=32, config wants 16
    with pytest.raises(ValueError, match="ckpt_every=16"):
        bwd.launch_backward(problem, cfg(CKPT=16), x, ckpt, torch.zeros(1, 20, 1, 8), None)


@pytest.mark.parametrize("config, reason", [
    (cfg(BLOCK_K=64), "twice K"),
    (cfg(BLOCK_B=8), "twice the 3 sequences"),
    (cfg(CKPT=128), "twice S"),
    (cfg(MATMUL="dot_tf32"), "precision"),
    (cfg(MATMUL="dot_ieee", DW_MATMUL="dot_tf32"), "DW_MATMUL=dot_tf32 rounds"),
    (cfg(BLOCK_K=8, MATMUL="dot_ieee"), ">= 16"),
    (cfg(BLOCK_K=32, BLOCK_B=2, num_warps=1), "registers"),
    (cfg(BLOCK_K=3), "BLOCK_K=3 not in"),
    (cfg(CKPT=20), "CKPT=20 not in"),
    (BWD.DEFAULT.with_params(STRAY=1), "unknown ['STRAY']"),
])
def test_impossible_configs_rejected_with_reason(config, reason):
    problem = Problem(B=3, S=40, K=24, V=64, dtype="float32")
    why = BWD.check(problem, config)
    assert why is not None and reason in why, why


def test_approx_tanh_rejected_in_interpreter():
    why = BWD.check(CASES[0][1], cfg(CKPT=16, TANH="approx"), interpreter=True)
    assert why is not None and "interpreter" in why


def test_default_extra_memory_at_paper_7b_within_budget():
    """Checkpoints + scratch + fp32 accumulators at paper-7b stay below the 870 / 900 MiB goals."""
    problem = shape("paper-7b")
    assert BWD.check(problem, BWD.DEFAULT) is None
    assert BWD.extra_bytes(problem, BWD.DEFAULT) < 870 * 2 ** 20
    start = LEAN.fit(LEAN.config(LEAN.gpu_start), problem)
    assert LEAN.check(problem, start) is None
    assert LEAN.extra_bytes(problem, start) < 900 * 2 ** 20


@pytest.mark.parametrize("config, reason", [
    (lean(BLOCK_K=64), "twice K"),
    (lean(CKPT=128), "twice S"),
    (lean(MATMUL="dot_tf32"), "precision"),
    (lean(DW_MATMUL="dot_bf16"), "DW_MATMUL=dot_bf16 rounds"),
    (lean(BLOCK_K=8), "BLOCK_K=8 not in"),
    (lean(BLOCK_B=2), "BLOCK_B=2 not in"),
    (lean(MATMUL="fma"), "MATMUL='fma' not in"),
    (lean(BULK=16, num_warps=1), "registers"),
])
def test_impossible_lean_configs_rejected_with_reason(config, reason):
    problem = Problem(B=3, S=40, K=24, V=16, dtype="float32")
    why = LEAN.check(problem, config)
    assert why is not None and reason in why, why


def test_a_block_longer_than_the_sequence_is_rejected():
    short = Problem(B=3, S=5, K=24, V=16, dtype="float32")
    why = LEAN.check(short, lean(CKPT=16, BULK=16, num_warps=4))
    assert why is not None and "twice the chunk's 5 steps" in why, why
    assert LEAN.check(short, lean(CKPT=16, BULK=4, num_warps=4)) is None


GPU_PROBLEM = Problem(B=2, S=200, K=64, V=16, Nq=1, Nk=1, Nv=8, Nw=8, Nf=8, dtype="bfloat16", h0=True)
GPU_VARLEN = Problem.varlen([70, 200, 129], K=64, V=16, Nq=1, Nk=1, Nv=8, Nw=8, Nf=8,
                            dtype="bfloat16", h0=True)
GPU_CASES = [
    (GPU_PROBLEM, cfg(CKPT=32, BLOCK_K=16, MATMUL="fma", TANH="approx", PREFETCH=2, num_warps=1), CLIP),
    (GPU_PROBLEM, cfg(CKPT=64, BLOCK_K=64, MATMUL="dot_bf16", STORE_Z=1, num_warps=4), None),
    (GPU_PROBLEM, cfg(CKPT=16, BLOCK_K=16, BLOCK_B=2, MATMUL="dot_tf32", num_warps=2, SLOTS=8), CLIP),
    (GPU_PROBLEM, cfg(CKPT=64, BLOCK_K=16, MATMUL="dot_tf32x3", DW_MATMUL="dot_tf32", TANH="approx",
                      STORE_Z=1, num_warps=1, SLOTS=16), CLIP),
    (GPU_VARLEN, cfg(CKPT=64, BLOCK_K=32, BLOCK_B=2, MATMUL="dot_bf16", TANH="approx", num_warps=2), CLIP),
    (GPU_PROBLEM, lean(CKPT=32, BULK=4, MATMUL="dot_bf16", TANH="approx", num_warps=1), CLIP),
    (GPU_PROBLEM, lean(CKPT=64, BULK=8, MATMUL="dot_tf32x3", DW_MATMUL="dot_tf32", TANH="approx",
                       num_warps=2, SLOTS=16), None),
    (GPU_VARLEN, lean(CKPT=32, BULK=2, MATMUL="dot_bf16", TANH="approx", BLOCK_K=32, num_warps=2), CLIP),
    # the shipped lean entries' levers, compiled: OVERLAP (B=1 long context), INLINE, both
    (GPU_VARLEN, lean(CKPT=32, BULK=2, MATMUL="dot_bf16", TANH="approx", PREFETCH=1, OVERLAP=1, num_warps=1), CLIP),
    (GPU_PROBLEM, lean(CKPT=32, BULK=2, BLOCK_K=32, MATMUL="dot_tf32", DW_MATMUL="dot_bf16", TANH="approx",
                       PREFETCH=1, INLINE=1, num_warps=1), CLIP),
    (GPU_VARLEN, lean(CKPT=32, BULK=2, MATMUL="dot_bf16", TANH="approx", PREFETCH=2, OVERLAP=1, INLINE=1,
                      num_warps=1), None),
    # SCRATCH=bf16, as the paper-7b and the B=1 S=16384 entries ship (2026-12-02)
    (GPU_PROBLEM, lean(CKPT=16, BULK=2, BLOCK_K=32, MATMUL="dot_bf16", TANH="approx", PREFETCH=1, SCRATCH="bf16",
                       num_warps=1), CLIP),
    (GPU_VARLEN, lean(CKPT=32, BULK=2, BLOCK_K=16, MATMUL="dot_bf16", TANH="approx", PREFETCH=1, OVERLAP=1,
                      SCRATCH="bf16", num_warps=1), CLIP),
]


def _gpu_id(problem, config):
    levers = "".join(f"-{name.lower()}" for name in ("OVERLAP", "INLINE") if config.get(name))
    levers += "-scratch_bf16" if config.get("SCRATCH") == "bf16" else ""
    return f"{config.variant}-{'varlen' if problem.is_varlen else 'fixed'}-{config['MATMUL']}-{config['TANH']}{levers}"


@pytest.mark.gpu
@pytest.mark.parametrize("problem, config, clip", GPU_CASES, ids=[_gpu_id(p, c) for p, c, _ in GPU_CASES])
def test_compiled_bf16_gradients_close_to_float64(problem, config, clip):
    """Compiled on the GPU (PTX tanh, bf16/tf32 tensor cores): a loose sanity bound, not a tolerance model."""
    errors, _ = run_case(problem, config, clip=clip, device="cuda", dtype=torch.bfloat16)
    assert_close(errors, tol=5e-2)
