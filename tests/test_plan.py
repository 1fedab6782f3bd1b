"""The validation plan (measure/plan.py) covers what the runtime uses a config for, and the
validator's new parts (checkpoints, a binding clip, the fp32-state baseline) can fail."""
from __future__ import annotations

import math

import pytest
import torch

from m2tune import coverage, variants
from m2tune.inputs import cast, make_inputs
from m2tune.kernel_variants.m2rnn.spec_base import SMALLEST_CHUNK
from m2tune.measure import plan as plans
from m2tune.measure.validate import auto_clip, validate_forward, variant_forward
from m2tune.problem import Problem, shape


def test_every_backward_asks_for_chunks_the_forward_is_validated_at():
    for name in variants.for_role("backward"):
        assert min(variants.spec(name).PARAMS["CKPT"]) == SMALLEST_CHUNK, name


@pytest.mark.parametrize("kernel, params", [("m2rnn_bwd", dict(CKPT=128)), ("m2rnn_bwd_lean", dict(CKPT=16)),
                                            ("m2rnn_bwd", dict(CKPT=64, BLOCK_B=4, MATMUL="dot_ieee", num_warps=4)),
                                            ("m2rnn_fwd", {})])
@pytest.mark.parametrize("interpreter", [True, False])
def test_plan_covers_chunks_h0_clip_packed_and_keeps_the_heads(kernel, params, interpreter):
    target = shape("paper-7b")                     # Nq = Nk = 1 shared by 132 heads
    config = variants.spec(kernel).config(params)
    assert variants.spec(kernel).check(target, config) is None
    plan = plans.plan_for(kernel, target, config, interpreter=interpreter)
    chunk = plan.chunk
    backward = variants.spec(kernel).role == "backward"
    assert chunk == (params["CKPT"] if backward else SMALLEST_CHUNK)
    assert set(plan.covers) == set(coverage.PATHS) - (set() if backward else {"clip"})
    fixed, packed = plan.cases[0], plan.cases[-1]
    assert all(c.problem.h0 for c in plan.cases)
    assert min(fixed.lengths) >= 2.5 * chunk and min(fixed.lengths) % chunk      # 3 chunks, the last partial
    if not interpreter:
        assert max(fixed.lengths) >= 512                                         # where rounding compounds
    lens = packed.problem.seqlens
    assert min(lens) < chunk and len(set(lens)) == len(lens) and len(lens) >= config.get("BLOCK_B", 1)
    assert any(n > chunk and n % chunk for n in lens)                            # a chunk and a partial
    for case in plan.cases:
        p = case.problem
        assert (p.K, p.V, p.dtype) == (target.K, target.V, target.dtype)
        assert p.Nq == p.Nk == 1 and p.Nv == p.Nw == p.Nf == p.N                 # sharing kept
        assert p.N == (2 if interpreter else target.N)
    assert plans.unfit_reason(plan, config) is None
    assert any(c.clip for c in plan.cases) == backward
    assert (fixed.ckpt_every == chunk) == (not backward)


def test_a_state_rounding_forward_is_not_checked_for_checkpoints():
    config = variants.spec("m2rnn_fwd").config(MATMUL="dot_bf16")
    plan = plans.plan_for("m2rnn_fwd", shape("paper-7b"), config, interpreter=False)
    assert all(c.ckpt_every == 0 for c in plan.cases)          # inference only (training_reason)
    assert variants.spec("m2rnn_fwd").rounding(config) == "bf16"


def test_auto_clip_binds_on_some_state_gradients_not_all():
    p = Problem(B=2, S=24, K=8, V=4, Nv=2, Nw=2, Nf=2, h0=True, dtype="float32")
    x = cast(make_inputs(p, seed=1), torch.float64, state=torch.float64)
    g = torch.Generator().manual_seed(0)
    dy = torch.randn(2, 24, 2, 4, generator=g, dtype=torch.float64)
    dh = torch.randn(2, 2, 8, 4, generator=g, dtype=torch.float64)
    bound, binding = auto_clip(x, dy, dh)
    assert bound > 0 and math.isfinite(bound) and 0.02 < binding < 0.5


P = Problem(B=2, S=40, K=16, V=16, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2, h0=True, dtype="bfloat16")
FWD = variants.spec("m2rnn_fwd").config(BLOCK_K=16, MATMUL="dot_ieee")


def test_checkpoints_are_compared_chunk_by_chunk(device):
    real = variant_forward(variants.load("m2rnn_fwd"), FWD)

    def stale(problem, x, y, h_T, ckpt_every=0):       # every chunk but the first one off by 1%
        ckpt = real(problem, x, y, h_T, ckpt_every=ckpt_every)
        if ckpt is not None:
            ckpt[:, :, 1:] *= 1.01
        return ckpt
    assert validate_forward(P, real, seed=1, lengths=(40,), ckpt_every=16, device=device).ok
    bad = validate_forward(P, stale, seed=1, lengths=(40,), ckpt_every=16, device=device)
    assert not bad.ok and "ckpt@S=40" in bad.reason() and "y@" not in bad.reason()


def test_packed_checkpoints_past_a_sequence_end_are_not_compared(device):
    packed = Problem.varlen([9, 40], K=16, V=16, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2, h0=True, dtype="bfloat16")
    r = validate_forward(packed, variant_forward(variants.load("m2rnn_fwd"), FWD), seed=2, lengths=(40,),
                         ckpt_every=16, device=device)
    assert r.ok, r.reason()


def test_the_baseline_keeps_the_state_in_fp32(device):
    """A forward that rounds its state to bf16 every step fails the fp32-state baseline and passes
    only when it declares the rounding (the rounded row)."""
    config = variants.spec("m2rnn_fwd").config(BLOCK_K=16, MATMUL="dot_bf16")
    fn = variant_forward(variants.load("m2rnn_fwd"), config)
    assert not validate_forward(P, fn, seed=3, lengths=(40,), device=device).ok
    declared = validate_forward(P, fn, seed=3, lengths=(40,), rounding="bf16", device=device)
    assert declared.ok, declared.reason()
    assert any("rounded-products" in n for n in declared.notes)
