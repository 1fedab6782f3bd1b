"""Planted faults in the backward template must each be rejected by the training validator."""
import pytest
import torch

from m2tune import variants
from m2tune.inputs import problem_of
from m2tune.problem import Problem
from m2tune.measure.validate import validate_training

from .mutation import mutate

fwd = variants.load("m2rnn_fwd")
bwd = variants.load("m2rnn_bwd")
FWD, BWD = variants.spec("m2rnn_fwd"), variants.spec("m2rnn_bwd")

PROBLEM = Problem(B=2, S=24, K=8, V=4, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2, h0=True, dtype="float32")
FWD = FWD.DEFAULT.with_params(BLOCK_K=8)
BWD = BWD.DEFAULT.with_params(BLOCK_K=8, CKPT=16)     # S=24: two chunks, the second partial

FAULTS = {
    "dW-not-accumulated-over-batch": ("dw_part.sum((1, 2))", "dw_part[:, :1].sum((1, 2))"),
    "dW-not-accumulated-over-steps": ("dw += _matmul_tn(", "dw = _matmul_tn("),
    "clipping-skipped": ("gc = tl.minimum(tl.maximum(g, -clip), clip)", "gc = g"),
    "wrong-chunk-replayed": ("h = tl.load(ckpt_ptr + ck_offs + c * K * V,",
                             "h = tl.load(ckpt_ptr + ck_offs + tl.maximum(c - 1, 0) * K * V,"),
    "dh0-dropped": ("tl.store(dh0_ptr + st_offs, dh.to(", "tl.store(dh0_ptr + st_offs, (dh * 0).to("),
}


def kernel_step(backward_module):
    def train(x, clip, dy, dh_T):
        p = problem_of(x)
        y = torch.empty(dy.shape, dtype=x.q.dtype, device=x.q.device)
        h_T = torch.empty(dh_T.shape, dtype=torch.float32, device=x.q.device)
        ckpt = fwd.launch(p, FWD, x, y, h_T, ckpt_every=BWD["CKPT"])
        grads = backward_module.launch_backward(p, BWD, x, ckpt, dy, dh_T, gradient_clipping=clip)
        return y, h_T, grads
    return train


def test_unmutated_backward_passes(device):
    result = validate_training(PROBLEM, kernel_step(bwd), seed=2, device=device, clip=0.05)
    assert result.ok, result.reason()


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_planted_backward_fault_is_rejected(fault, tmp_path, device):
    mutant = mutate(bwd, *FAULTS[fault], tmp_path)
    result = validate_training(PROBLEM, kernel_step(mutant), seed=2, device=device, clip=0.05)
    assert not result.ok, f"fault {fault} passed validation"
