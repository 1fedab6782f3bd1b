"""The tuner compiles ahead every binary a trial launches (measure/precompile.trial_jobs).

A binary is selected by the launch's compile-time switches and by Triton's specialisation of its
integer arguments (== 1, % 16): here recorded from the launches a real GPU trial's validation and
timing make (the kernels replaced by recorders, on the CPU), and checked against the jobs.
"""
from __future__ import annotations

import pytest

from m2tune import variants
from m2tune.measure import precompile
from m2tune.measure.launch import prepare
from m2tune.problem import Problem
from m2tune.tuning import trial as trials

TARGET = Problem(B=3, S=100, K=8, V=4, Nv=2, Nw=2, Nf=2)


def signature(p: Problem, *, clip, ckpt_every: int, forward=None) -> tuple:
    length = ("packed", p.seqlens) if p.is_varlen else ("S % 16", p.S % 16, p.S == 1)
    return (length, p.B, p.h0, clip is not None, ckpt_every, forward and forward.as_dict().__repr__())


def record_launches(monkeypatch, kernel: str) -> list[tuple]:
    """Replace the kernels' launches by recorders; the list fills as a trial runs."""
    seen: list[tuple] = []
    spec = variants.spec(kernel)
    forward_name = spec.checkpoints_from if spec.role == "backward" else kernel
    fwd_module = variants.load(forward_name)
    last_forward: dict = {}

    def fake_forward(problem, config, x, y, h_T, *, ckpt_every=0, info=None, compile_only=False):
        last_forward.update(config=config, ckpt_every=ckpt_every)
        if spec.role != "backward":
            seen.append(signature(problem, clip=None, ckpt_every=ckpt_every))
        if ckpt_every:
            import torch
            return torch.zeros(problem.B, problem.N, -(-problem.S // ckpt_every), problem.K, problem.V)
        return None
    monkeypatch.setattr(fwd_module, "launch", fake_forward)
    if spec.role == "backward":
        def fake_backward(problem, config, x, ckpt, dy, dh_T, *, gradient_clipping=None, poison=False,
                          info=None, compile_only=False):
            # the checkpointing forward just ran on the same problem (prepare runs it too)
            assert last_forward["ckpt_every"] == config["CKPT"]
            seen.append(signature(problem, clip=gradient_clipping, ckpt_every=0, forward=last_forward["config"]))
            return {}
        monkeypatch.setattr(variants.load(kernel), "launch_backward", fake_backward)
    return seen


def job_signature(job) -> tuple:
    p, config, options = job
    return signature(p, clip=options.get("gradient_clipping"), ckpt_every=options.get("ckpt_every", 0),
                     forward=options.get("forward_config"))


@pytest.mark.parametrize("kernel, params", [("m2rnn_fwd", {}), ("m2rnn_fwd", dict(BLOCK_B=4)),
                                            ("m2rnn_bwd_lean", dict(CKPT=32)), ("m2rnn_bwd", dict(CKPT=16))])
def test_the_jobs_cover_every_launch_of_a_gpu_trial(kernel, params, monkeypatch):
    config = variants.spec(kernel).config(params)
    request = trials.TrialRequest(kernel, TARGET, config, mode=trials.GPU)
    seen = record_launches(monkeypatch, kernel)
    trials._validate(request, variants.load(kernel), "cpu")          # the plan's cases, recorded
    validation = len(seen)
    forward = trials._forward_config(request) if trials._is_training(request) else None
    prepare(TARGET, config, device="cpu", forward_config=forward).run()    # the timed launch
    assert validation >= 3 and len(seen) == validation + 1
    jobs = precompile.trial_jobs(TARGET, config)
    assert {job_signature(j) for j in jobs} == set(seen)            # each needed, none missing
    assert len(jobs) == len(set(seen))                               # and none twice
    assert all(j[0].S <= 32 or j[0].is_varlen for j in jobs)         # every one shrunk to compile cheaply
