"""Trials in isolation (m2tune.worker): every failure is recorded with its category and the
same Worker goes on to run the next trial.

CPU tests run the worker in interpret mode at a tiny problem; one module-scoped
Worker is shared so torch and triton are imported in a child once, not per test.
Planted process-level faults come from tests/planted_variants.py.
"""
from __future__ import annotations

import json
import time

import pytest

from m2tune import status
from m2tune.kernel_variants.m2rnn.spec import BACKWARD, FORWARD
from m2tune.problem import Problem
from m2tune.tuning.trial import GPU, INTERPRET, TrialRequest, TrialResult
from m2tune.tuning.worker import Worker
from tests import planted_variants as planted
from tests.interpreter import needs_interpreter

PROBLEM = Problem(B=2, S=16, K=16, V=8, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2, dtype="float32")
EXTRA = {planted.NAME: (planted.SPEC_REF, planted.MODULE)}
SLOW_OK = 120.0          # generous: the first interpreted launch in a child is slow on a busy machine




def request(config, **kw) -> TrialRequest:
    kw = {"problem": PROBLEM, "mode": INTERPRET, "device": None, "extra_variants": EXTRA, **kw}
    return TrialRequest(variant=config.variant, config=config, **kw)


def good_planted():
    return planted.DEFAULT.with_params(FAULT="none")


@pytest.fixture(scope="module")
def worker():
    with Worker(None, INTERPRET) as w:
        yield w


def assert_errors_small(result: TrialResult, outputs):
    assert set(result.errors) == set(outputs), result.errors
    for name, e in result.errors.items():
        assert e["finite"] and e["error"] <= e["limit"] and e["error"] < 1e-4, (name, e)
        assert e["case"] in ("fixed", "clip", "packed")
    # validated on the plan (measure/plan.py): several chunks, h0, packed sequences
    assert result.validated["plan"] >= 2 and {"chunks", "h0", "packed"} <= set(result.validated["paths"])


@needs_interpreter
def test_good_forward_is_ok(worker):
    r = worker.run(request(FORWARD.DEFAULT), timeout_s=SLOW_OK)
    assert r.status == status.OK, r.message
    assert_errors_small(r, {"y", "h_T", "ckpt"})           # the checkpoints a backward reads, too
    assert r.compile_s is not None and r.compile_s > 0 and r.wall_s >= r.compile_s
    assert r.median_ms is None and r.gpu == {}          # interpret mode validates only
    json.dumps(r.as_dict(), allow_nan=False)


@needs_interpreter
def test_good_backward_is_ok(worker):
    config = BACKWARD.DEFAULT.with_params(CKPT=16, BLOCK_K=16)
    r = worker.run(request(config), timeout_s=SLOW_OK)
    assert r.status == status.OK, r.message
    assert_errors_small(r, {"y", "h_T", "dq", "dk", "dv", "dW", "df", "dh0"})
    assert "clip" in r.validated["paths"]


@pytest.mark.parametrize("config, forward, reason", [
    (FORWARD.DEFAULT.with_params(BLOCK_K=64), None, "twice K"),
    (FORWARD.DEFAULT.with_params(TANH="approx"), None, "interpreter"),
    (BACKWARD.DEFAULT.with_params(CKPT=16), FORWARD.DEFAULT.with_params(BLOCK_K=64),
     "forward config"),
], ids=["fwd-block", "fwd-approx-tanh", "bwd-with-bad-forward"])
def test_invalid_config_needs_no_process(config, forward, reason):
    w = Worker(None, INTERPRET)
    r = w.run(request(config, forward_config=forward), timeout_s=1.0)
    assert r.status == status.INVALID_CONFIG and reason in r.message, r.message
    assert w.pid is None and w.starts == 0


# fault -> (status, restarts the child, timeout)
FAULTS = {
    "raise": (status.LAUNCH_ERROR, False, SLOW_OK),
    "wrong": (status.WRONG_RESULT, False, SLOW_OK),
    "crash": (status.CRASHED, True, SLOW_OK),
    "segfault": (status.CRASHED, True, SLOW_OK),
    "hang": (status.TIMEOUT, True, 3.0),
}


@needs_interpreter
@pytest.mark.parametrize("fault", list(FAULTS))
def test_planted_fault_is_classified_and_the_study_goes_on(worker, fault):
    expected, restarts, timeout_s = FAULTS[fault]
    worker.run(request(good_planted()), timeout_s=SLOW_OK)          # a running child to fail in
    pid, starts = worker.pid, worker.starts

    bad = worker.run(request(planted.DEFAULT.with_params(FAULT=fault)), timeout_s=timeout_s)
    assert bad.status == expected, (bad.status, bad.message)
    assert bad.resources is None and bad.median_ms is None
    json.dumps(bad.as_dict(), allow_nan=False)

    t0 = time.perf_counter()
    good = worker.run(request(good_planted()), timeout_s=SLOW_OK)
    elapsed = time.perf_counter() - t0
    assert good.status == status.OK, good.message
    if restarts:
        assert worker.pid != pid and worker.starts == starts + 1
        # a fresh child spends a second or more importing torch and triton: not the trial's time
        assert elapsed - good.wall_s > 0.5, (elapsed, good.wall_s)
    else:
        assert worker.pid == pid and worker.starts == starts


@needs_interpreter
def test_fault_messages_say_what_happened(worker):
    wrong = worker.run(request(planted.DEFAULT.with_params(FAULT="wrong")), timeout_s=SLOW_OK)
    assert "y@fixed S=" in wrong.message and "too large" in wrong.message
    assert wrong.errors["y"]["error"] > wrong.errors["y"]["limit"]
    raised = worker.run(request(planted.DEFAULT.with_params(FAULT="raise")), timeout_s=SLOW_OK)
    assert "planted: the launch raised" in raised.message
    crash = worker.run(request(planted.DEFAULT.with_params(FAULT="crash")), timeout_s=SLOW_OK)
    assert "SIGABRT" in crash.message


@needs_interpreter
def test_close_ends_the_child():
    with Worker(None, INTERPRET) as w:
        assert w.run(request(FORWARD.DEFAULT), timeout_s=SLOW_OK).ok
        process = w._process
    assert w.pid is None and not process.is_alive() and process.exitcode == 0


def test_request_for_another_worker_is_refused():
    w = Worker(None, INTERPRET)
    with pytest.raises(ValueError, match="sent to a interpret worker"):
        w.run(request(FORWARD.DEFAULT, mode=GPU, device=0), timeout_s=1.0)
    with pytest.raises(ValueError, match="device index"):
        Worker(None, GPU)


def test_result_dict_is_strict_json():
    r = TrialResult(status.WRONG_RESULT, "x", errors={"y": {"error": float("nan"), "limit": 1e-5}})
    d = r.as_dict()
    assert d["errors"]["y"] == {"error": None, "limit": 1e-5}
    json.dumps(d, allow_nan=False)


# ---------------------------------------------------------------- GPU (run on the H200)

GPU_PROBLEM = Problem(B=2, S=64, K=32, V=16, Nq=1, Nk=1, Nv=4, Nw=4, Nf=4, dtype="bfloat16")


def gpu_request(config, **kw) -> TrialRequest:
    kw = {"problem": GPU_PROBLEM, "mode": GPU, "device": 0, "reps": 5, "warmup": 1,
          "extra_variants": EXTRA, **kw}
    return TrialRequest(variant=config.variant, config=config, **kw)


@pytest.fixture(scope="module")
def gpu_worker():
    with Worker(0, GPU) as w:
        yield w


def assert_timed(r: TrialResult):
    assert r.status == status.OK, r.message
    assert r.reps == 5 and 0 < r.p20_ms <= r.median_ms <= r.p80_ms
    assert r.compile_s > 0
    assert r.resources["n_regs"] > 0 and r.resources["num_warps"] >= 1     # from the compiled kernel
    json.dumps(r.as_dict(), allow_nan=False)


@pytest.mark.gpu
def test_gpu_forward_is_validated_and_timed(gpu_worker):
    assert_timed(gpu_worker.run(gpu_request(FORWARD.DEFAULT.with_params(TANH="approx")), timeout_s=300))


@pytest.mark.gpu
def test_gpu_backward_is_validated_and_timed(gpu_worker):
    config = BACKWARD.DEFAULT.with_params(CKPT=16, MATMUL="dot_tf32x3")
    assert_timed(gpu_worker.run(gpu_request(config, gradient_clipping=0.05), timeout_s=300))


@pytest.mark.gpu
def test_gpu_illegal_address_then_a_fresh_context(gpu_worker):
    gpu_worker.run(gpu_request(good_planted()), timeout_s=300)
    pid = gpu_worker.pid
    bad = gpu_worker.run(gpu_request(planted.DEFAULT.with_params(FAULT="illegal-address")), timeout_s=120)
    assert bad.status in (status.LAUNCH_ERROR, status.CRASHED), (bad.status, bad.message)
    good = gpu_worker.run(gpu_request(good_planted()), timeout_s=300)
    assert_timed(good)
    assert gpu_worker.pid != pid         # the possibly poisoned context was not reused
