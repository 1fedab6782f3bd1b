"""The performance model against committed H200 measurements (re-runs on the CPU).

bench/results/2026-11-29-h200-model/measurements.csv: 114 configs (forward and backward, seeded
spread plus the default and known-good ones) timed on an H200 at paper-7b, paper-400m and
square-64, S=4096 bf16. profiles/nvidia-h200/hardware.json: what `m2tune calibrate` wrote on the
same GPU; its constants were fitted to its own micro-benchmarks (other problems, S=512), never to
these measurements.

Goals (issue 4): Spearman >= 0.8 and the measured best inside the model's top 5 on every shape.
Where it lands (printed with -s), with the compiled kernels' registers and shared memory from the
CSV: the top-5 goal holds everywhere (the measured best is the model's rank 1 or 2); Spearman is
0.87-0.94 on five of six (shape, kernel) groups and 0.70 for the square-64 forward, which misses
0.8. The assertions pin what was reached, so a change that makes the model worse fails here.
"""
from pathlib import Path

import pytest

from m2tune.model.hardware import HardwareProfile
from m2tune.model.modelcheck import agreement, read_csv

ROOT = Path(__file__).resolve().parent.parent
MEASUREMENTS = ROOT / "bench/results/2026-11-29-h200-model/measurements.csv"
PROFILE = ROOT / "profiles/nvidia-h200/hardware.json"


@pytest.fixture(scope="module")
def result():
    rows = read_csv(MEASUREMENTS)
    out = agreement(rows, HardwareProfile.load(PROFILE))
    print("\nmodel vs H200 measurements:")
    for a in out:
        print("  " + a.line())
    return out


def test_every_shape_and_kernel_is_covered_by_enough_measurements(result):
    groups = {(a.shape, a.variant) for a in result}
    assert groups == {(s, v) for s in ("paper-7b", "paper-400m", "square-64") for v in ("m2rnn_fwd", "m2rnn_bwd")}
    assert sum(a.configs for a in result) >= 60
    assert all(a.configs >= 14 for a in result)


def test_measured_best_is_in_the_model_top5_everywhere(result):
    assert all(a.best_in_top5 for a in result), [a.line() for a in result if not a.best_in_top5]


def test_rank_correlation(result):
    worst = min(a.spearman for a in result)
    mean = sum(a.spearman for a in result) / len(result)
    assert worst >= 0.65, [a.line() for a in result]
    assert mean >= 0.85, mean
    # the goal, 0.8, is reached on five of six groups (square-64 forward: 0.70)
    assert sum(a.spearman >= 0.8 for a in result) >= 5
