"""Planted faults in both backward kernels must each be rejected by the training validator."""
import pytest
import torch

from m2tune import variants
from m2tune.inputs import problem_of
from m2tune.measure.validate import validate_training
from m2tune.problem import Problem

from .mutation import mutate

fwd = variants.load("m2rnn_fwd")
FWD = variants.spec("m2rnn_fwd").config(BLOCK_K=8)

# kernel -> (problem, config, {fault: (anchor, replacement)})
CASES = {
    "m2rnn_bwd": (
        Problem(B=2, S=24, K=8, V=4, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2, h0=True, dtype="float32"),
        variants.spec("m2rnn_bwd").config(BLOCK_K=8, CKPT=16),        # S=24: two chunks, the second partial
        {
            "dW-not-accumulated-over-batch": ("dw_part.sum((1, 2))", "dw_part[:, :1].sum((1, 2))"),
            "dW-not-accumulated-over-steps": ("dw += _matmul_tn(", "dw = _matmul_tn("),
            "clipping-skipped": ("gc = tl.minimum(tl.maximum(g, -clip), clip)", "gc = g"),
            "wrong-chunk-replayed": ("h = tl.load(ckpt_ptr + ck_offs + c * K * V,",
                                     "h = tl.load(ckpt_ptr + ck_offs + tl.maximum(c - 1, 0) * K * V,"),
            "dh0-dropped": ("tl.store(dh0_ptr + st_offs, dh.to(", "tl.store(dh0_ptr + st_offs, (dh * 0).to("),
        }),
    # K = V = 16: a sum over the wrong axis has the right shape; S=40: three chunks, blocks of 4;
    # INLINE=0: dq and df in the blocks too (one sequence: no fault here depends on the batch)
    "m2rnn_bwd_lean": (
        Problem(B=1, S=40, K=16, V=16, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2, h0=True, dtype="float32"),
        variants.spec("m2rnn_bwd_lean").config(CKPT=16, BULK=4, INLINE=0, num_warps=4),
        {
            "da-written-one-step-late": ("tl.store(sg_base + (j - j0) * TILE + in_tile, da)",
                                         "tl.store(sg_base + tl.minimum(j - j0 + 1, BULK - 1) * TILE + in_tile, da)"),
            "dW-misses-the-last-step-of-a-block": (
                "h_prev = tl.load(sc_base + jb[:, None, None] * TILE + in_tile[None, :, :], mask=real3,",
                "h_prev = tl.load(sc_base + jb[:, None, None] * TILE + in_tile[None, :, :], "
                "mask=(real & (jb + 1 < jn))[:, None, None],"),
            "recompute-from-the-wrong-checkpoint": ("sc_base, c, L, bos, n_steps, ck_base + c * K * V + ck_offs,",
                                                    "sc_base, c, L, bos, n_steps, ck_base + tl.maximum(c - 1, 0) * K * V + ck_offs,"),
            "dk-summed-over-the-wrong-axis": ("tl.sum(da_b * v_b[:, None, :], axis=2)",
                                              "tl.sum(da_b * v_b[:, None, :], axis=1)"),
            "dv-summed-over-the-wrong-axis": ("tl.sum(da_b * k_b[:, :, None], axis=1)",
                                              "tl.sum(da_b * k_b[:, :, None], axis=2)"),
            "clamp-skipped-in-the-chain": ("g = tl.minimum(tl.maximum(g, -clip), clip)", "g = g"),
            "shared-head-reduction-drops-a-head": ("tl.sum(da_b * v_b[:, None, :], axis=2), rk2, DK_ATOMIC)",
                                                   "tl.sum(da_b * v_b[:, None, :], axis=2), rk2 & (n < N - 1), DK_ATOMIC)"),
            "df-from-the-wrong-step": ("tl.store(se_base + (j - j0) * TILE + in_tile, g * hz)",
                                       "tl.store(se_base + (jn - 1 - j0) * TILE + in_tile, g * hz)"),
            "dh0-dropped": ("tl.store(dh0_ptr + st_offs, dh.to(", "tl.store(dh0_ptr + st_offs, (dh * 0).to("),
        }),
    # OVERLAP (the next chunk's recompute inside this chunk's sweep) with INLINE (dq in the recompute,
    # df in the chain step); S=36: three chunks, the last one short (one sequence: the faults are in
    # the per-program chunk order); SLOTS=1: both heads add into one dq copy (with a copy each, a dq
    # written twice would be stored twice, harmless)
    "m2rnn_bwd_lean-overlap-inline": (
        Problem(B=1, S=36, K=16, V=8, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2, h0=True, dtype="float32"),
        variants.spec("m2rnn_bwd_lean").config(CKPT=16, BULK=4, OVERLAP=1, INLINE=1, SLOTS=1, num_warps=4),
        {
            "overlap-recompute-from-the-wrong-checkpoint": ("cr = tl.maximum(c - 1, 0)", "cr = tl.maximum(c - 2, 0)"),
            "overlap-recompute-overwrites-the-swept-chunk": ("rc_base = sc_prog + ((c + 1) % 2) * SPAN",
                                                             "rc_base = sc_prog + (c % 2) * SPAN"),
            "overlap-recompute-one-slot-late": ("r = L - 1 - j", "r = tl.minimum(L - j, CKPT - 1)"),
            "overlap-short-chunk-tail-skipped": ("for r in range(L, CKPT):", "for r in range(CKPT, CKPT):"),
            # (only where chunk 0 is whole: a short one's extra recompute steps lie past the sequence,
            # and unmasked they would write out of bounds, which no validator should have to survive)
            "inline-dq-of-chunk-0-counted-twice": ("dq_on = c > 0", "dq_on = (c > 0) | (L == CKPT)"),
            "inline-dq-from-the-state-before-the-step": ("_dq_step(h, rdy, rdqc, r,", "_dq_step(hr, rdy, rdqc, r,"),
            # (the tail's call: the sweep's own is indented four more)
            "inline-dq-dropped-in-the-short-chunk-tail": (
                "dq_on, in_tile,\n" + " " * 54 + "rkc,", "dq_on & False, in_tile,\n" + " " * 54 + "rkc,"),
            "inline-df-one-token-late": ("accumulate(dfc, j * Nf,", "accumulate(dfc, tl.minimum(j + 1, L - 1) * Nf,"),
        }),
}
PARAMS = [(kernel, fault) for kernel, (_, _, faults) in CASES.items() for fault in sorted(faults)]


def lengths_of(problem):
    # the problem's own length only (every case has several chunks, the last one short): the validator's
    # quarter-length run adds a fifth of the interpreted steps and no fault here needs it
    return (problem.S,)


def _module(kernel):
    return variants.load(kernel.split("-")[0])


def kernel_step(backward_module, config):
    def train(x, clip, dy, dh_T):
        p = problem_of(x)
        y = torch.empty(dy.shape, dtype=x.q.dtype, device=x.q.device)
        h_T = torch.empty(dh_T.shape, dtype=torch.float32, device=x.q.device)
        ckpt = fwd.launch(p, FWD, x, y, h_T, ckpt_every=config["CKPT"])
        grads = backward_module.launch_backward(p, config, x, ckpt, dy, dh_T, gradient_clipping=clip)
        return y, h_T, grads
    return train


@pytest.mark.parametrize("kernel", sorted(CASES))
def test_unmutated_backward_passes(kernel, device):
    problem, config, _ = CASES[kernel]
    result = validate_training(problem, kernel_step(_module(kernel), config), seed=2, device=device, clip=0.05,
                               lengths=lengths_of(problem))
    assert result.ok, result.reason()


@pytest.mark.parametrize("kernel, fault", PARAMS, ids=[f"{k}-{f}" for k, f in PARAMS])
def test_planted_backward_fault_is_rejected(kernel, fault, tmp_path, device):
    problem, config, faults = CASES[kernel]
    mutant = mutate(_module(kernel), *faults[fault], tmp_path)
    result = validate_training(problem, kernel_step(mutant, config), seed=2, device=device, clip=0.05,
                               lengths=lengths_of(problem))
    assert not result.ok, f"fault {fault} passed validation"
