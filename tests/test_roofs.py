"""The roofs of a sequential kernel (m2tune/model/roofs.py) against the same numbers worked out by
hand from the committed H200 hardware profile and the paper-7b shape."""
from __future__ import annotations

import dataclasses

import pytest

from m2tune import variants
from m2tune.model.hardware import find
from m2tune.model.roofs import issue_rates, step_roofs
from m2tune.problem import shape
from m2tune.resources import data_dir

P = shape("paper-7b")          # B=4 S=4096 K=64 V=16 N=132: 4*132*64*16 state elements
X = 4 * 132 * 64 * 16 / 132    # per SM per step, whatever the config (none pads at this shape)


@pytest.fixture(scope="module")
def hw():
    return find("nvidia-h200", [data_dir("profiles")])


def _roofs(hw, variant, **params):
    return step_roofs(P, variants.spec(variant).config(params), hw)


def test_forward_roofs_by_hand(hw):
    # sm_90: 16 SFU and 128 FMA results per clock per SM, at the profile's 1980 MHz
    assert hw.capability == "9.0" and issue_rates(hw) == {"sfu": 16 * 1980.0, "fma": 128 * 1980.0}
    bf16 = _roofs(hw, "m2rnn_fwd", MATMUL="dot_bf16", TANH="approx", BLOCK_K=32)
    assert bf16.x == X and bf16.waves == 1
    assert bf16.roofs["sfu"] == pytest.approx(X / (16 * 1980))                 # one MUFU op per tanh.approx
    # H·W: 16 multiply-adds per element, 2 flops each, at the measured bf16 rate shared by 132 SMs
    assert bf16.roofs["tensor"] == pytest.approx(2 * 16 * X / (hw.bf16_tflops * 1e6 / 132))
    tokens = 4 * 4096
    step_bytes = (tokens * (64 + 64 + 132 * 16 + 132) * 2 + tokens * 132 * 16 * 2 + 4 * 132 * 64 * 16 * 4) / 4096
    assert bf16.roofs["memory"] == pytest.approx(step_bytes / (hw.hbm_gbps * 1e3))
    assert set(bf16.roofs) == {"latency", "sfu", "tensor", "memory"} and bf16.binding == "latency"
    fma = _roofs(hw, "m2rnn_fwd", MATMUL="fma", TANH="exact")
    # the exact tanh is exp2 and a reciprocal: two SFU ops; the product on the FP32 cores
    assert fma.roofs["sfu"] == pytest.approx(2 * X / (16 * 1980))
    assert fma.roofs["fma"] == pytest.approx(16 * X / (128 * 1980)) and "tensor" not in fma.roofs
    # ieee dots are an FMA loop in Triton, not tensor-core work
    assert "fma" in _roofs(hw, "m2rnn_fwd", MATMUL="dot_ieee").roofs
    # every throughput roof is linear in the work: slope x x
    for name, slope in bf16.per_element.items():
        assert bf16.roofs[name] == pytest.approx(slope * bf16.x)


def test_latency_roof_is_the_models_chain_per_wave(hw):
    from m2tune.model import perfmodel
    config = variants.spec("m2rnn_fwd").config({})          # the default: estimated two waves here
    r = step_roofs(P, config, hw)
    pred = perfmodel.predict(P, config, hw)
    assert r.waves == pred.geometry.waves == 2
    assert r.roofs["latency"] == pytest.approx(pred.latency_us * 2)
    assert r.x == X                                          # two waves of half the programs each


def test_a_backward_brings_its_own_work(hw):
    # bwd.py's spec: tanh twice per element and step (the recompute and the sweep) unless STORE_Z
    bwd = _roofs(hw, "m2rnn_bwd", MATMUL="dot_bf16", TANH="approx", STORE_Z=0)
    assert bwd.roofs["sfu"] == pytest.approx(2 * X / (16 * 1980))
    assert _roofs(hw, "m2rnn_bwd", MATMUL="dot_bf16", TANH="approx", STORE_Z=1).roofs["sfu"] == pytest.approx(
        X / (16 * 1980))


def test_an_unknown_architecture_has_no_issue_rate_roofs(hw):
    other = dataclasses.replace(hw, capability="12.3")
    r = _roofs(other, "m2rnn_fwd", MATMUL="fma")
    assert issue_rates(other) is None and set(r.roofs) == {"latency", "memory"}
