"""Planted faults in the forward template must each be rejected by the validator."""
import pytest

from m2tune import variants
from m2tune.problem import Problem
from m2tune.measure.validate import validate_forward, variant_forward

from .mutation import mutate

fwd = variants.load("m2rnn_fwd")
FWD = variants.spec("m2rnn_fwd")

PLAIN = Problem(B=2, S=8, K=24, V=12, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2)
VARLEN = Problem.varlen([6, 9, 4], K=16, V=12, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2, h0=True)
SPLIT = FWD.DEFAULT.with_params(BLOCK_K=8, MATMUL="fma", PREFETCH=1)

FAULTS = {
    # name: (anchor, replacement, problem, config)
    "wrong-row-index": ("(tok * Nk + hk) * K + rows_k, mask=valid",
                        "(tok * Nk + hk) * K + (rows_k + 1) % K, mask=valid", PLAIN, SPLIT),
    "wrong-shared-head": ("hv = n // (N // Nv)", "hv = n % Nv", PLAIN.__class__(
        B=2, S=8, K=16, V=12, Nq=1, Nk=1, Nv=2, Nw=4, Nf=4), SPLIT),
    "skipped-step": ("            h = h_new\n", "            h = tl.where(t == 3, h, h_new)\n",
                     PLAIN, SPLIT),
    "missing-one-minus-f": ("h_new = fb * h + (1.0 - fb) * z", "h_new = fb * h + z", PLAIN, SPLIT),
    # K split: y stored by each program instead of summed (last writer wins)
    "y-not-summed-across-K-blocks": ("accumulate(y_ptr, y_offs, yb, y_mask, SPLIT_K)",
                                     "accumulate(y_ptr, y_offs, yb, y_mask, False)", PLAIN, SPLIT),
    "varlen-off-by-one-at-end": (
        "seqlen = tl.load(cu_ptr + rows_b + 1, mask=row_ok, other=0).to(tl.int64) - bos",
        "seqlen = tl.load(cu_ptr + rows_b + 1, mask=row_ok, other=0).to(tl.int64) - bos - 1",
        VARLEN, SPLIT.with_params(BLOCK_B=2)),
    "prefetch-reads-current-step": ("bos + t + 1,", "bos + t,", PLAIN, SPLIT),
    "y-row-left-unwritten": ("y_mask = (b_ok & (t < len_y))", "y_mask = (b_ok & (t < len_y - 1))",
                             PLAIN, SPLIT.with_params(BLOCK_K=32)),
}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_planted_fault_is_rejected(fault, dtype, tmp_path, device):
    anchor, replacement, problem, config = FAULTS[fault]
    problem = problem.with_dtype(dtype)
    honest = validate_forward(problem, variant_forward(fwd, config), seed=7, device=device)
    assert honest.ok, f"unmutated kernel must pass first: {honest.reason()}"
    mutant = mutate(fwd, anchor, replacement, tmp_path)
    result = validate_forward(problem, variant_forward(mutant, config), seed=7, device=device)
    assert not result.ok, f"fault {fault} passed validation: {result.checks}"
