"""m2tune/interpreter_calls.py: helper calls inside an interpreted launch skip Triton's re-patching
of triton.language, and nothing else changes (results, the restore after a launch, a failing launch)."""
from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl
from triton.runtime import interpreter

from m2tune import interpreter_calls

pytestmark = pytest.mark.skipif(not triton.knobs.runtime.interpret, reason="runs the Triton interpreter")


@triton.jit
def _scaled_row_sum(x, scale):
    # a helper that itself calls a helper of triton.language.standard (tl.sum sees triton.language.core)
    return tl.sum(x * scale, axis=0)


@triton.jit
def _helpers_kernel(x_ptr, out_ptr, STEPS: tl.constexpr, BLOCK: tl.constexpr, FAIL: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs)                                      # [BLOCK]
    acc = 0.0
    for i in range(STEPS):
        acc += _scaled_row_sum(x, i + 1.0)
    if FAIL:
        tl.static_assert(BLOCK < 0, "planted failure")
    tl.store(out_ptr, acc)


@pytest.fixture
def counted(monkeypatch):
    """Triton's own _patch_lang, counting its calls, under a freshly installed shim."""
    interpreter_calls.uninstall()
    calls = []
    original = interpreter._patch_lang

    def counting(fn):
        calls.append(fn.__name__)
        return original(fn)
    monkeypatch.setattr(interpreter, "_patch_lang", counting)
    assert interpreter_calls.install()
    yield calls
    interpreter_calls.uninstall()
    assert interpreter._patch_lang is counting        # uninstall put back what it found


def _run(steps=40, fail=False):
    x = torch.arange(8, dtype=torch.float32)
    out = torch.zeros(1)
    _helpers_kernel[(1,)](x, out, STEPS=steps, BLOCK=8, FAIL=fail)
    return out.item()


def test_helpers_skip_the_repatching_and_the_result_is_unchanged(counted):
    expected = float(sum(range(8))) * sum(i + 1.0 for i in range(40))
    assert _run() == pytest.approx(expected)
    # the launch's own patch and one for tl.sum's module, not one per helper call (80 here)
    assert len(counted) <= 3, counted
    before = len(counted)
    interpreter_calls.uninstall()
    assert _run() == pytest.approx(expected)
    assert len(counted) - before >= 80               # Triton alone patches at every helper call


def test_the_launch_still_restores_the_language(counted):
    _run(steps=3)
    assert tl.core.is_builtin(tl.load) and tl.core.is_builtin(tl.store)


def test_a_failing_launch_leaves_the_next_one_patched_normally(counted):
    with pytest.raises(Exception, match="planted failure"):
        _run(fail=True)
    n = len(counted)
    assert _run(steps=2) == pytest.approx(float(sum(range(8))) * 3.0)
    assert 1 <= len(counted) - n <= 3


def test_an_interpreter_laid_out_otherwise_gets_no_shim(monkeypatch):
    interpreter_calls.uninstall()
    monkeypatch.delattr(interpreter, "GridExecutor")
    try:
        assert interpreter_calls.install() is False
        assert not getattr(interpreter._patch_lang, "_m2tune_shim", False)
    finally:
        interpreter_calls.uninstall()


def test_loading_a_kernel_in_the_interpreter_installs_it():
    from m2tune import variants
    interpreter_calls.uninstall()
    variants.load("m2rnn_bwd_lean")
    assert getattr(interpreter._patch_lang, "_m2tune_shim", False)
