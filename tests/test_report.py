"""m2tune report on the committed H200 study (bench/results/2026-11-29-h200-tune-paper-7b), CPU only.

The study file is copied first: SQLite may write a journal next to the database it opens. Two small
studies are added to the copy: one of the model backend (everything it shows must say PREDICTED)
and one for a GPU without a hardware profile (the model's figures are skipped with a note).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "2026-11-29-h200-tune-paper-7b"
H200 = "m2rnn_fwd/paper-7b/nvidia-h200/gpu"
MODEL = "m2rnn_fwd/paper-7b/nvidia-h200/model"
NO_PROFILE = "m2rnn_fwd/paper-7b/acme-x1/gpu"
S = 4096                        # paper-7b
# bench/results/2026-11-29-h200-tune-paper-7b/summary.txt
COUNTS = {"ok": 50, "invalid-config": 36, "pruned-by-model": 14, "duplicate": 30}
BEST_MS, BEST_TRIAL = 2.5119, 2


def _add_study(url: str, name: str, gpu: str, backend: str, source) -> None:
    """A small study of `backend` for `gpu`, its trials the first ok configs of `source`."""
    import optuna

    from m2tune.model import perfmodel
    from m2tune.model.hardware import find
    from m2tune.problem import KernelConfig, shape
    from m2tune.resources import data_dir
    hw = find("nvidia-h200", [data_dir("profiles")])
    study = optuna.create_study(study_name=name, storage=url)
    study.set_user_attr("identity", {"variant": "m2rnn_fwd", "shape": "paper-7b", "backend": backend,
                                     "problem": shape("paper-7b").describe(), "gpu": gpu})
    ok = [t for t in source.get_trials() if t.user_attrs.get("status") == "ok"][:6]
    for t in ok:
        config = t.user_attrs["config"]
        value = perfmodel.predict(shape("paper-7b"), KernelConfig.of("m2rnn_fwd", config), hw).time_ms
        study.add_trial(optuna.trial.create_trial(
            params=t.params, distributions=t.distributions, value=value if backend == "model" else t.value,
            user_attrs={"status": "ok", "config": config, "backend": backend, "predicted_ms": value}))
    bad = source.get_trials()[5]            # an invalid-config trial of the H200 study
    study.add_trial(optuna.trial.create_trial(
        params=bad.params, distributions=bad.distributions, state=optuna.trial.TrialState.FAIL,
        user_attrs={"status": "invalid-config", "message": bad.user_attrs["message"]}))
    study.ask()                             # left RUNNING: not finished, not in the report


@pytest.fixture(scope="module")
def storage_url(tmp_path_factory) -> str:
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = tmp_path_factory.mktemp("report") / "study.db"
    shutil.copy(RESULTS / "study.db", path)
    url = f"sqlite:///{path}"
    source = optuna.load_study(study_name=H200, storage=url)
    assert source.get_trials()[5].user_attrs["status"] == "invalid-config"
    _add_study(url, MODEL, "nvidia-h200", "model", source)
    _add_study(url, NO_PROFILE, "acme-x1", "gpu", source)
    return url


@pytest.fixture(scope="module")
def data(storage_url):
    import optuna

    from m2tune.report.data import load_study_data
    return {name: load_study_data(optuna.load_study(study_name=name, storage=storage_url))
            for name in (H200, MODEL, NO_PROFILE)}


def test_trials_frame_matches_the_study_summary(storage_url):
    import optuna

    from m2tune.report.data import trials_frame
    frame = trials_frame(optuna.load_study(study_name=H200, storage=storage_url))
    assert len(frame) == 130 and frame["number"].tolist() == list(range(130))
    assert frame["status"].value_counts().to_dict() == COUNTS
    ok = frame["status"] == "ok"
    # a time only where the trial itself validated and was timed: no penalties, no copied duplicates
    assert frame.loc[ok, "value_ms"].notna().all() and frame.loc[~ok, "value_ms"].isna().all()
    assert frame["value_ms"].max() < 100
    assert frame.loc[ok, "us_per_step"].tolist() == pytest.approx((frame.loc[ok, "value_ms"] * 1e3 / S).tolist())
    for column in ("BLOCK_K", "BLOCK_B", "PREFETCH", "MATMUL", "TANH", "num_warps", "predicted_ms",
                   "n_regs", "shared", "sm_clock_mhz", "temperature_c", "changed", "inference_only"):
        assert column in frame.columns, column
    assert frame.loc[ok, "n_regs"].notna().all() and frame.loc[ok, "sm_clock_mhz"].notna().all()
    best = frame.loc[frame["value_ms"].idxmin()]
    assert best["number"] == BEST_TRIAL and best["MATMUL"] == "dot_bf16" and best["TANH"] == "approx"
    # named by what it changes from the template's default (fma, exact tanh, BLOCK_K=16, 1 warp, ...)
    assert best["changed"] == "MATMUL=dot_bf16 TANH=approx"
    # bf16 and tf32 products round the state: the forward spec refuses them for training
    rounding = frame["MATMUL"].isin(["dot_bf16", "dot_tf32"])
    assert (frame.loc[ok, "inference_only"] == rounding[ok]).all() and rounding[ok].any() and (~rounding[ok]).any()


def test_only_finished_trials(data):
    frame = data[MODEL].frame
    assert len(frame) == 7 and set(frame["state"]) == {"COMPLETE", "FAIL"}


def test_history_puts_failures_in_their_own_lane(data):
    from m2tune.report.figures import _get_history_info, _get_history_plot
    info = _get_history_info(data[H200])
    assert len(info.numbers) == COUNTS["ok"] == len(info.best_ms) == len(info.inference_only)
    assert all(b <= a for a, b in zip(info.best_ms, info.best_ms[1:]))
    assert info.best_ms[-1] == pytest.approx(BEST_MS, abs=1e-4)
    assert all(b <= v for b, v in zip(info.best_ms, info.values_ms))
    assert {k: len(v) for k, v in info.failures.items()} == {"invalid-config": 36, "pruned-by-model": 14}
    assert H200 in info.title and "130 trials" in info.title and "2.5119" in info.title
    assert not info.title.startswith("PREDICTED")
    assert info.winner == 61                     # the confirm stage's pick, not the fastest single timing
    fig = _get_history_plot(info)
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis2.type == "category"
    lanes = {t.name: t for t in fig.data if t.name in info.failures}
    timed = [t for t in fig.data if t.name.startswith("validated")]
    # rejected and pruned trials have no time: never on the time axis, each category a row of the lane
    assert set(lanes) == set(info.failures) and all(t.yaxis == "y2" for t in lanes.values())
    assert all(t.yaxis == "y" for t in timed) and sum(len(t.x) for t in timed) == COUNTS["ok"]
    assert set(lanes["invalid-config"].y) == {"invalid-config (36)"}
    assert [t.name for t in timed] == ["validated", "validated, inference only (products round the state)"]
    assert any("winner #61" in a.text for a in fig.layout.annotations)


def test_parameter_effects_group_every_ok_trial_once(data):
    from m2tune.report.figures import _get_param_effects_info, _get_param_effects_plot
    d = data[H200]
    info = _get_param_effects_info(d)
    ok = sorted(d.ok["number"])
    assert [p.name for p in info.panels] == ["BLOCK_K", "BLOCK_B", "PREFETCH", "MATMUL", "TANH", "num_warps"]
    for panel in info.panels:
        numbers = [n for ns in panel.trials.values() for n in ns]
        assert sorted(numbers) == ok, panel.name
        for label, ns in panel.trials.items():      # each group holds the trials with that value
            assert all(str(d.frame.set_index("number").loc[n, panel.name]) == label for n in ns)
    matmul = next(p for p in info.panels if p.name == "MATMUL")
    assert list(matmul.trials) == ["fma", "dot_ieee", "dot_tf32x3", "dot_tf32", "dot_bf16"]   # space order
    assert matmul.inference_only == {"dot_tf32", "dot_bf16"}
    # only the value that makes a config inference-only is marked, not values that kept its company
    assert not any(p.inference_only for p in info.panels if p.name != "MATMUL")
    fig = _get_param_effects_plot(info)
    assert len(fig.data) == 6 and fig.layout.xaxis.type == "category"
    # every box says its n, and the n is the number of points in it
    for trace, panel in zip(fig.data, info.panels):
        for label, ns in panel.trials.items():
            tick = panel.tick(label)
            assert tick.endswith(f"n={len(ns)}") and list(trace.x).count(tick) == len(ns)
    assert "inference<br>only" in matmul.tick("dot_bf16") and "inference" not in matmul.tick("fma")


def test_model_vs_measurement_on_held_out_trials(data):
    import dataclasses

    from m2tune.model import perfmodel
    from m2tune.problem import KernelConfig, Problem
    from m2tune.report.modelfit import _get_model_fit_info, _get_model_fit_plot
    d = data[H200]
    info = _get_model_fit_info(d)
    print(f"\nSpearman (model vs measured, {len(info.numbers)} ok trials of {H200}): {info.spearman:+.3f}, "
          f"median error {info.median_ape:.1f}%")
    assert info.note is None
    assert sorted(info.numbers) == sorted(d.ok["number"]) and len(info.predicted_ms) == COUNTS["ok"]
    # calibrate fitted the constants at S=512 on its own problems: every paper-7b trial is held out
    assert all(info.held_out) and "held-out" in info.title and "none of these 50 trials" in info.caption
    assert -1 <= info.spearman <= 1 and info.spearman > 0      # a model that ranks backwards is broken
    assert "Spearman" in info.title and f"{info.spearman:+.3f}" in info.title
    # predictions use the compiled kernel's recorded registers and shared memory
    row = d.ok.set_index("number").loc[BEST_TRIAL]
    expected = perfmodel.predict(d.problem, KernelConfig.of("m2rnn_fwd", row["config"]), d.hw,
                                 {"n_regs": int(row["n_regs"]), "shared": int(row["shared"])})
    assert info.predicted_ms[info.numbers.index(BEST_TRIAL)] == pytest.approx(expected.time_ms)
    names = [t.name for t in _get_model_fit_plot(info).data]
    assert "y = x" in names
    # a trial on a calibration run's problem and config is in-sample: marked, and left out of ρ
    run = d.hw.raw["m2rnn_fwd"][0]
    frame = d.frame.copy()
    first = frame.index[frame["status"] == "ok"][0]
    frame.at[first, "config"] = dict(run["config"])
    frame.loc[first, ["n_regs", "shared"]] = pd.NA
    fitted = dataclasses.replace(d, frame=frame, problem=Problem(**run["problem"]))
    mixed = _get_model_fit_info(fitted)
    assert mixed.held_out.count(False) == 1 and not mixed.held_out[mixed.numbers.index(int(frame.at[first, "number"]))]
    assert "1 of these trials is among them" in mixed.caption and "over 49 trials" in mixed.title


def test_model_figures_skipped_without_profile_or_measurements(data):
    from m2tune.report.modelfit import _get_model_fit_info
    from m2tune.report.roofline import _get_roofline_info
    assert "no hardware profile" in _get_model_fit_info(data[NO_PROFILE]).note
    assert "no hardware profile" in _get_roofline_info(data[NO_PROFILE]).note
    assert any("acme-x1" in n for n in data[NO_PROFILE].notes)
    assert "predictions" in _get_model_fit_info(data[MODEL]).note


def test_roofline_of_the_sequential_kernel(data):
    from m2tune.model.roofs import step_roofs
    from m2tune.problem import KernelConfig
    from m2tune.report.roofline import _get_roofline_info, _get_roofline_plot
    d = data[H200]
    info = _get_roofline_info(d)
    assert info.note is None and len(info.points) == COUNTS["ok"] and info.skipped == 0
    assert info.winner.number == 61 and info.default is not None and info.default.label == "default"
    # paper-7b: B*N*K*V = 4*132*64*16 state elements over 132 SMs, whatever the config (none pads here)
    assert {p.x for p in info.points} == {4 * 64 * 16}
    w = info.winner
    assert w.time_us == pytest.approx(float(d.ok.set_index("number").loc[61, "value_ms"]) * 1e3 / S)
    # the model's roofs (tests/test_roofs.py) with the compiled kernel's registers the trial recorded
    row = d.ok.set_index("number").loc[61]
    own = step_roofs(d.problem, KernelConfig.of("m2rnn_fwd", row["config"]), d.hw,
                     {"n_regs": int(row["n_regs"]), "shared": int(row["shared"])})
    assert w.roofs == own.roofs and w.matmul == "dot_bf16" and "fma" not in w.roofs
    # the lines are the winner's roofs: the floor its chain, the throughput lines through its points
    lines = {ln.name: ln for ln in info.lines}
    assert set(lines) == {"latency", "sfu", "fma", "tensor", "memory"}
    assert lines["latency"].y == [w.roofs["latency"]] * 2
    for name in ("sfu", "tensor", "memory"):
        slope = lines[name].y[0] / lines[name].x[0]
        assert slope * w.x == pytest.approx(w.roofs[name])
    # every point is bound by its highest roof, and on this shape that is one dependency chain
    for p in info.points:
        assert p.binding == max(p.roofs, key=p.roofs.get) == "latency"
    assert "latency 50" in info.caption and "winner (#61" in info.caption and "default runs at" in info.caption
    fig = _get_roofline_plot(info)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    names = [t.name for t in fig.data]
    for roof in ("step-latency floor", "SFU: tanh", "FMA", "tensor cores", "memory"):
        assert any(n.startswith(roof) for n in names), roof
    assert "MATMUL=dot_bf16 (inference only)" in names and "MATMUL=dot_tf32x3" in names
    hovers = [h for t in fig.data if t.name.startswith("MATMUL") for h in t.hovertext]
    assert len(hovers) == COUNTS["ok"] and all("binding roof: latency" in h for h in hovers)
    assert [a.text.split(":")[0] for a in fig.layout.annotations] == ["winner", "default"]


def test_failures_table_of_reasons(data):
    from m2tune.report.figures import _get_failures_info, _get_failures_table
    info = _get_failures_info(data[H200])
    assert dict(zip(info.categories, info.counts)) == {"invalid-config": 36, "pruned-by-model": 14}
    # study.db's messages: numbers folded, so the 14 model prunings are one reason
    assert info.reasons[0] == ("invalid-config", 20,
                               "a block of at least twice the batch does the same work as a smaller one")
    pruned = [r for r in info.reasons if r[0] == "pruned-by-model"]
    assert len(pruned) == 1 and pruned[0][1] == 14 and pruned[0][2].startswith("predicted ")
    # a "; " inside parentheses is part of one rule's text
    assert not any(r[2].endswith("(dot") for r in info.reasons)
    table = _get_failures_table(info)
    assert "<td class=\"n\">20</td>" in table and "invalid-config 36" in table


def test_model_backend_is_labelled_predicted(data):
    from m2tune.report.figures import _get_failures_info, _get_history_info, _get_param_effects_info
    from m2tune.report.roofline import _get_roofline_info
    d = data[MODEL]
    for get in (_get_history_info, _get_param_effects_info, _get_roofline_info, _get_failures_info):
        assert get(d).title.startswith("PREDICTED"), get.__name__
    roof = _get_roofline_info(d)
    assert roof.time_label == "predicted" and "(predicted)" in roof.title
    # a predicted step is the model's chain (or slower) over every wave: never under its latency roof
    assert roof.points and all(p.ratio >= 0.999 for p in roof.points)
    assert not _get_history_info(data[H200]).title.startswith("PREDICTED")


def test_write_report(storage_url, tmp_path):
    from m2tune.report.page import write_report
    path = write_report(tmp_path / "out" / "report.html", storage_url=storage_url)
    text = path.read_text(encoding="utf-8")
    for name, sid in ((H200, "m2rnn_fwd-paper-7b-nvidia-h200-gpu"), (MODEL, "m2rnn_fwd-paper-7b-nvidia-h200-model"),
                      (NO_PROFILE, "m2rnn_fwd-paper-7b-acme-x1-gpu")):
        assert f'<section id="{sid}"><h2>{name}' in text
    assert len(re.findall(r"plotly\.js v\d", text)) == 1           # plotly.js inlined exactly once
    assert not re.search(r"<script[^>]*\bsrc=", text)              # nothing to fetch: it opens offline
    assert text.count("Plotly.newPlot(") == 4 + 3 + 2              # figures: all, no model fit, neither model one
    assert 'id="m2rnn_fwd-paper-7b-nvidia-h200-gpu-roofline"' in text
    section = text[text.index(f'<h2>{MODEL}'):text.index(f'<h2>{NO_PROFILE}')]
    assert 'class="predicted">PREDICTED' in section and "PREDICTED by the performance model" in section
    assert "26.0381 ms" in text and "10.35x" in text                # the confirm stage's default config
    assert "BLOCK_B=2 MATMUL=dot_bf16 TANH=approx (inference only)" in text
    assert text.count("<th>category</th>") == 3                     # a failures table per study
    assert path.stat().st_size < 8e6


def test_cli_report(storage_url, tmp_path):
    from m2tune.cli import main
    out = tmp_path / "r.html"
    result = CliRunner().invoke(main, ["report", "--storage", storage_url, "--study", H200, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output and out.is_file()
    text = out.read_text(encoding="utf-8")
    assert H200 in text and MODEL not in text
    bad = CliRunner().invoke(main, ["report", "--storage", storage_url, "--study", "nope", "--out", str(out)])
    assert bad.exit_code != 0 and "nope" in bad.output
    missing = CliRunner().invoke(main, ["report", "--storage", f"sqlite:///{tmp_path}/none.db"])
    assert missing.exit_code != 0 and not (tmp_path / "none.db").exists()
    # a study file named as a path is read like --storage sqlite:///PATH
    db = storage_url.removeprefix("sqlite:///")
    by_path = CliRunner().invoke(main, ["report", db, "--study", MODEL, "--out", str(out)])
    assert by_path.exit_code == 0, by_path.output
    assert MODEL in out.read_text(encoding="utf-8")


def test_m2tune_import_does_not_load_pandas_or_plotly():
    code = ("import sys, m2tune; from m2tune import runtime, M2RNN; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'plotly')); "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # and the check can fail: the report module does load both
    result = subprocess.run([sys.executable, "-c", code.replace("from m2tune import runtime, M2RNN",
                                                                "import m2tune.report.page")],
                            cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.returncode == 1 and "pandas" in result.stdout and "plotly" in result.stdout
