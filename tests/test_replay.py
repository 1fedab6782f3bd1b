"""The replay backend (m2tune/tuning/replay.py): studies scored from a recorded grid of H200
measurements (the model calibration's 24 measured forward configs at paper-7b), on the CPU."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from m2tune import status
from m2tune.cli import main
from m2tune.model.modelcheck import read_csv, write_csv
from m2tune.problem import KernelConfig
from m2tune.tuning.options import TuneError, TuneOptions
from m2tune.tuning.replay import load_grid
from m2tune.tuning.tune import Tuner

ROOT = Path(__file__).resolve().parent.parent
MEASURED = ROOT / "bench" / "results" / "2026-11-29-h200-model" / "measurements.csv"


def recorded(shape="paper-7b", variant="m2rnn_fwd"):
    return [r for r in read_csv(MEASURED) if r["shape"] == shape and r["variant"] == variant]


def test_a_replayed_trial_gets_the_recorded_time_failure_or_not_recorded(tmp_path):
    fast, *others = sorted(recorded(), key=lambda r: r["median_ms"])
    failed = dict(others[0], median_ms=None, p20_ms=None, p80_ms=None, error="compile-error: PTXAS out of registers")
    odd = dict(others[1], median_ms=None, error="some message without a status")
    path = tmp_path / "grid.csv"
    write_csv([fast, failed, odd], path)
    grid = load_grid(path, "m2rnn_fwd", "paper-7b")
    # a config given without parameters the spec has since gained still matches (defaults filled in)
    got = grid.outcome(KernelConfig.of("m2rnn_fwd", fast["config"]))
    assert got.status == status.OK and got.median_ms == fast["median_ms"] and got.p80_ms == fast["p80_ms"]
    bad = grid.outcome(KernelConfig.of("m2rnn_fwd", failed["config"]))
    assert bad.status == status.COMPILE_ERROR and "PTXAS" in bad.message
    assert grid.outcome(KernelConfig.of("m2rnn_fwd", odd["config"])).status == status.LAUNCH_ERROR
    other = {**fast["config"], "num_warps": 8 if fast["config"]["num_warps"] != 8 else 4}
    assert grid.outcome(KernelConfig.of("m2rnn_fwd", other)).status == status.NOT_RECORDED
    assert status.NOT_RECORDED in status.FREE          # no GPU time would be spent on it here


def test_a_replayed_study_finds_the_grid_best_among_what_it_ran(tmp_path):
    # the space's starting points first, then TPE: what it runs is scored from the grid, the rest free
    opts = TuneOptions(variant="m2rnn_fwd", shape="paper-7b", backend="replay", grid=str(MEASURED),
                       target="nvidia-h200", trials=4, storage=f"sqlite:///{tmp_path}/r.db", seed=3,
                       prune=False, confirm=0)
    tuner = Tuner(opts)
    summary = tuner.run()
    times = {json.dumps(r["config"], sort_keys=True): r["median_ms"] for r in recorded()}
    ran = [t for t in tuner.study.get_trials() if t.user_attrs.get("status") == status.OK]
    assert ran and len(ran) <= 4
    for t in ran:                                    # every ok value is the recorded median
        key = json.dumps(KernelConfig.of("m2rnn_fwd", t.user_attrs["config"]).as_dict(), sort_keys=True)
        assert t.value == pytest.approx(times[key]) and t.user_attrs["predicted"] is False
    assert summary["best"]["value_ms"] == pytest.approx(min(t.value for t in ran))


def test_replay_errors_name_the_option(tmp_path):
    with pytest.raises(TuneError, match="needs --grid"):
        Tuner(TuneOptions(backend="replay", target="nvidia-h200", storage=f"sqlite:///{tmp_path}/a.db"))
    with pytest.raises(TuneError, match=r"--grid .*: no rows for m2rnn_fwd at k32-v16-b8-n32-s2048; it has"):
        Tuner(TuneOptions(backend="replay", grid=str(MEASURED), shape="k32-v16-b8-n32-s2048", target="nvidia-h200",
                          storage=f"sqlite:///{tmp_path}/b.db"))
    result = CliRunner().invoke(main, ["tune", "--backend", "model", "--grid", str(MEASURED)])
    assert result.exit_code == 2 and "--grid and --backend replay go together" in result.output
    result = CliRunner().invoke(main, ["tune", "--backend", "replay", "--grid", str(tmp_path / "none.csv"),
                                       "--gpu", "nvidia-h200", "--storage", f"sqlite:///{tmp_path}/c.db"])
    assert result.exit_code == 2 and "none.csv: no such file" in result.output


def test_the_efficiency_benchmark_over_a_complete_grid(tmp_path):
    """bench/replay_efficiency.py's runs over a grid that holds every config of a small space (times
    from the H200 performance model: the replay machinery, not a measurement): every proposal is
    recorded, the samplers reach the grid's best, pruning answers some candidates for free."""
    import argparse
    import sys
    sys.path.insert(0, str(ROOT / "bench"))
    import replay_efficiency

    from tests.tuning import replay_grid
    space = tmp_path / "small.yaml"
    text = (ROOT / "bench" / "grids" / "m2rnn_fwd-one-warp.yaml").read_text()
    space.write_text(text.replace("MATMUL: {choices: [fma, dot_ieee, dot_tf32x3, dot_tf32, dot_bf16, dot_bf16x2]}",
                                  "MATMUL: {choices: [fma, dot_tf32x3, dot_bf16, dot_bf16x2]}")
                     .replace("BLOCK_K: {choices: [16, 32, 64, 128]}", "BLOCK_K: {choices: [16, 32]}"))
    replay_grid(tmp_path, space, "paper-7b", "BLOCK_B <= 2")
    space.write_text(space.read_text().replace("  BLOCK_B: {choices: [1, 2, 4, 8]}", "  BLOCK_B: {choices: [1, 2]}"))
    grid = load_grid(tmp_path / "grid.csv", "m2rnn_fwd", "paper-7b")
    args = argparse.Namespace(variant="m2rnn_fwd", shape="paper-7b", grid=str(tmp_path / "grid.csv"),
                              target="nvidia-h200", space=str(space), goal_ms=grid.best_ms * 1.03)
    for sampler, prune in (("tpe", False), ("random", True)):
        run = replay_efficiency.one_run(args, sampler, prune, seed=1, size=len(grid.rows))
        assert run["not_recorded"] == 0, run
        assert run["trials_to_goal"] is not None and run["trials_to_goal"] <= run["run"] <= len(grid.rows), run
        assert (run["pruned"] > 0) == prune, run
