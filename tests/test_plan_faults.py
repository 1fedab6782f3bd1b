"""Planted faults that a one-chunk, no-h0, no-clip validation let through are rejected by the
tuner's own validation path: the model backend's evaluator (a worker process, the interpreter,
the validation plan of measure/plan.py), exactly as `m2tune tune --backend model` runs a trial.
The honest kernels still pass there, at fp32 and bf16."""
from __future__ import annotations

import sys

import pytest

from m2tune import status, variants
from m2tune.model.hardware import HardwareProfile
from m2tune.problem import Problem
from m2tune.resources import data_dir
from m2tune.tuning.backends import ModelEvaluator

from .mutation import mutant_variant

# a bf16 dH carry hides in bf16 rounding where nothing compounds; in fp32 it is 1e-3 off at once
FAULTS = {
    # fault: (kernel, dtype, anchor, replacement)
    "bwd-one-sided-clamp": ("m2rnn_bwd", "bfloat16", "gc = tl.minimum(tl.maximum(g, -clip), clip)",
                            "gc = tl.minimum(g, clip)"),
    "lean-one-sided-clamp": ("m2rnn_bwd_lean", "bfloat16", "g = tl.minimum(tl.maximum(g, -clip), clip)",
                             "g = tl.minimum(g, clip)"),
    "bwd-clamp-before-q-dy": ("m2rnn_bwd", "bfloat16", "gc = tl.minimum(tl.maximum(g, -clip), clip)",
                              "gc = tl.minimum(tl.maximum(dh, -clip), clip) + qt[:, None] * dyt"),
    "lean-clamp-before-q-dy": ("m2rnn_bwd_lean", "bfloat16", "g = tl.minimum(tl.maximum(g, -clip), clip)",
                               "g = tl.minimum(tl.maximum(dh, -clip), clip) + q[:, None] * dy[None, :]"),
    "bwd-dh0-missing-f": ("m2rnn_bwd", "bfloat16", "dh_new = fb * g + matmul(",
                          "dh_new = tl.where(t == 0, 1.0, fb) * g + matmul("),
    "lean-dh0-missing-f": ("m2rnn_bwd_lean", "bfloat16", "dh = f * g + matmul(da, wt, w, MATMUL, EMULATE_BF16_DOT)",
                           "dh = tl.where(t0 + j == 0, 1.0, f) * g + matmul(da, wt, w, MATMUL, EMULATE_BF16_DOT)"),
    "bwd-wrong-chunk-replayed": ("m2rnn_bwd", "bfloat16", "h = tl.load(ckpt_ptr + ck_offs + c * K * V,",
                                 "h = tl.load(ckpt_ptr + ck_offs + tl.maximum(c - 1, 0) * K * V,"),
    "bwd-bf16-dH-carry": ("m2rnn_bwd", "bfloat16", "dh_new = fb * g + matmul(da, wt, w, MATMUL, EMULATE_BF16_DOT)",
                          "dh_new = (fb * g + matmul(da, wt, w, MATMUL, EMULATE_BF16_DOT)).to(tl.bfloat16).to(tl.float32)"),
    "lean-bf16-dH-carry": ("m2rnn_bwd_lean", "bfloat16", "dh = f * g + matmul(da, wt, w, MATMUL, EMULATE_BF16_DOT)",
                           "dh = (f * g + matmul(da, wt, w, MATMUL, EMULATE_BF16_DOT)).to(tl.bfloat16).to(tl.float32)"),
    "fwd-bf16-checkpoints": ("m2rnn_fwd", "bfloat16", "tl.store(ckpt_ptr + ck_offs + (t // CKPT) * K * V, h, mask=st_mask)",
                             "tl.store(ckpt_ptr + ck_offs + (t // CKPT) * K * V, h.to(tl.bfloat16).to(tl.float32), "
                             "mask=st_mask)"),
}
# the configs validated: exact products (the fp32-state class), exact tanh, 16-step chunks
PARAMS = {"m2rnn_fwd": dict(BLOCK_K=16, MATMUL="dot_ieee"),
          "m2rnn_bwd": dict(BLOCK_K=16, MATMUL="dot_ieee", CKPT=16),
          "m2rnn_bwd_lean": dict(BLOCK_K=16, MATMUL="dot_ieee", CKPT=16, BULK=4)}


def target(dtype: str) -> Problem:
    return Problem(B=2, S=256, K=16, V=16, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2, dtype=dtype)


@pytest.fixture(scope="module")
def mutants(tmp_path_factory):
    work = tmp_path_factory.mktemp("mutants")
    sys.path.insert(0, str(work))              # the worker child inherits it (spawn passes sys.path)
    try:
        yield {fault: mutant_variant(kernel, old, new, work) for fault, (kernel, _, old, new) in FAULTS.items()}
    finally:
        sys.path.remove(str(work))


@pytest.fixture(scope="module")
def evaluator(mutants):
    hw = HardwareProfile.load(data_dir("profiles") / "nvidia-h200" / "hardware.json")
    extra = {name: (spec_ref, module) for name, spec_ref, module in mutants.values()}
    ev = ModelEvaluator(hw, trial_timeout_s=600, extra_variants=extra)
    yield ev
    ev.close()


def _config(variant: str, kernel: str):
    return variants.spec(variant).config(dict(TANH="exact", **PARAMS[kernel]))


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_planted_fault_is_rejected_by_the_tuners_validation(fault, mutants, evaluator):
    kernel, dtype, _, _ = FAULTS[fault]
    name, _, _ = mutants[fault]
    outcome = evaluator.evaluate(name, target(dtype), _config(name, kernel), seed=3)
    assert outcome.result.status == status.WRONG_RESULT, (fault, outcome.result.status, outcome.result.message)
    assert outcome.value is None and "too large" in outcome.result.message


@pytest.mark.parametrize("kernel", sorted(PARAMS))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_honest_kernels_pass_it(kernel, dtype, evaluator):
    outcome = evaluator.evaluate(kernel, target(dtype), _config(kernel, kernel), seed=3)
    assert outcome.result.ok, outcome.result.message
    assert outcome.value is not None and outcome.predicted
    record = outcome.result.validated
    assert record["where"] == "interpreter" and {"chunks", "h0", "packed"} <= set(record["paths"])
    if variants.spec(kernel).role == "backward":
        assert "clip" in record["paths"]
        assert any("clamps" in n for n in record["notes"]), record["notes"]     # the clip bound binds
