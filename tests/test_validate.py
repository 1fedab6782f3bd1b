"""The validator itself: it must fail what is wrong and pass what is honest."""
import pytest
import torch

from m2tune import status
from m2tune.problem import Problem
from m2tune.kernel_variants.m2rnn.naive import m2rnn_reference
from m2tune.measure.validate import relative_error, validate_forward

P = Problem(B=3, S=8, K=6, V=4, Nv=2, Nw=2, Nf=2, h0=True, dtype="float32")


def reference_candidate(noise=0.0, hole=False, fail=False):
    def run(problem, x, y, h_T):
        if fail:
            raise RuntimeError("planted launch failure")
        yr, hr = m2rnn_reference(x.q, x.k, x.v, x.W, x.f, x.h0, cu_seqlens=x.cu_seqlens,
                                 dtype=torch.float32)
        y.copy_(yr + noise * torch.randn_like(yr))
        h_T.copy_(hr)
        if hole:
            y[1, -1, 0, 2] = float("nan")   # as if one element was never written
    return run


def test_the_reference_at_fp32_passes():
    r = validate_forward(P, reference_candidate(), seed=1)
    assert r.ok and r.status == status.OK, r.reason()


def test_unwritten_element_fails():
    r = validate_forward(P, reference_candidate(hole=True), seed=1)
    assert not r.ok and "NaN" in r.reason()


def test_small_noise_fails_in_fp32():
    r = validate_forward(P, reference_candidate(noise=1e-3), seed=1)
    assert not r.ok and r.status == status.WRONG_RESULT


def test_launch_failure_is_recorded_not_raised():
    r = validate_forward(P, reference_candidate(fail=True), seed=1)
    assert r.status == status.LAUNCH_ERROR and "planted launch failure" in r.error


def test_error_is_the_worst_sequence():
    ref = torch.randn(8, 10, 2, 4, dtype=torch.float64)
    bad = ref.clone()
    bad[5] *= 1.1                                  # one sequence of eight is 10% off
    p = Problem(B=8, S=10, K=4, V=4, Nv=2)
    assert abs(relative_error(bad, ref, p, time_dim=True) - 0.1) < 1e-9
    whole = ((bad - ref).norm() / ref.norm()).item()
    assert whole < 0.05                            # the plain norm would dilute it


def test_two_lengths_short_and_four_times():
    r = validate_forward(P, reference_candidate(), seed=2)
    assert sorted({c.length for c in r.checks}) == [2, 8]


def test_bf16_limit_is_capped_when_the_reference_itself_is_wrong():
    from m2tune.measure.tolerance import ROUNDED, TOLERANCES
    tol = TOLERANCES[("bfloat16", ROUNDED)]
    assert tol.limit(1e-2) == pytest.approx(tol.factor * 1e-2 + tol.floor)
    assert tol.limit(0.8) == tol.cap   # an O(1)-wrong reference gradient must not admit O(1) errors


def test_fp32_outputs_of_a_bf16_problem_have_their_own_floor():
    """h_T, checkpoints and dh0 are fp32: their baseline is fp32-exact, so a bf16 store of them
    (3e-3 off) must not hide under the bf16 outputs' floor."""
    from m2tune.measure.tolerance import EXACT, TOLERANCES
    tol = TOLERANCES[("bfloat16", EXACT)]
    assert tol.limit(1e-7, fp32_output=True) < 1e-3 < 3e-3
    assert tol.limit(1.7e-3) > 1.7e-3 * tol.factor


def test_interpreter_bf16_outputs_are_judged_as_the_interpreter_rounds(monkeypatch):
    from m2tune.measure.validate import rounded_like
    x = torch.randn(4096, dtype=torch.float64)
    out = torch.empty(4096, dtype=torch.bfloat16)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    truncated = rounded_like(x, out)
    assert bool((truncated.double().abs() <= x.abs()).all())          # toward zero
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    nearest = rounded_like(x, out)
    assert torch.equal(nearest, x.to(torch.bfloat16))
    e = lambda r: ((r.double() - x).norm() / x.norm()).item()      # noqa: E731
    assert 1.7 < e(truncated) / e(nearest) < 2.3


def test_a_packed_sequence_ending_on_a_chunk_boundary_passes_an_honest_candidate():
    # seqlens (4, 8, 2) at 4 steps a chunk: the first sequence's second chunk starts at its end,
    # which the reference observes and no kernel writes; both sides must leave it out
    from m2tune.measure.validate import _chunk_states
    packed = Problem.varlen([4, 8, 2], K=6, V=4, Nv=2, Nw=2, Nf=2, h0=True, dtype="float32")

    def run(problem, x, y, h_T, ckpt_every=0):
        states, see = _chunk_states(problem, x, torch.float32, ckpt_every)
        yr, hr = m2rnn_reference(x.q, x.k, x.v, x.W, x.f, x.h0, cu_seqlens=x.cu_seqlens,
                                 dtype=torch.float32, observe=see)
        y.copy_(yr)
        h_T.copy_(hr)
        return states
    r = validate_forward(packed, run, seed=1, ckpt_every=4, lengths=(packed.S,))
    assert r.ok, r.reason()
    assert any(c.name == "ckpt" for c in r.checks)
