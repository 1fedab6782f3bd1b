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
                   "n_regs", "shared", "sm_clock_mhz", "temperature_c"):
        assert column in frame.columns, column
    assert frame.loc[ok, "n_regs"].notna().all() and frame.loc[ok, "sm_clock_mhz"].notna().all()
    best = frame.loc[frame["value_ms"].idxmin()]
    assert best["number"] == BEST_TRIAL and best["MATMUL"] == "dot_bf16" and best["TANH"] == "approx"


def test_only_finished_trials(data):
    frame = data[MODEL].frame
    assert len(frame) == 7 and set(frame["state"]) == {"COMPLETE", "FAIL"}


def test_history_best_so_far(data):
    from m2tune.report.figures import _get_history_info, _get_history_plot
    info = _get_history_info(data[H200])
    assert len(info.numbers) == COUNTS["ok"] == len(info.best_ms)
    assert all(b <= a for a, b in zip(info.best_ms, info.best_ms[1:]))
    assert info.best_ms[-1] == pytest.approx(BEST_MS, abs=1e-4)
    assert all(b <= v for b, v in zip(info.best_ms, info.values_ms))
    assert {k: len(v) for k, v in info.failures.items()} == {"invalid-config": 36, "pruned-by-model": 14}
    assert H200 in info.title and "130 trials" in info.title and "2.5119" in info.title
    assert not info.title.startswith("PREDICTED")
    assert _get_history_plot(info).layout.yaxis.type == "log"


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
    fig = _get_param_effects_plot(info)
    assert len(fig.data) == 6 and fig.layout.xaxis.type == "category"


def test_model_vs_measurement(data):
    from m2tune.model import perfmodel
    from m2tune.problem import KernelConfig
    from m2tune.report.figures import _get_model_fit_info, _get_model_fit_plot
    d = data[H200]
    info = _get_model_fit_info(d)
    print(f"\nSpearman (model vs measured, {len(info.numbers)} ok trials of {H200}): {info.spearman:+.3f}, "
          f"median error {info.median_ape:.1f}%")
    assert info.note is None
    assert sorted(info.numbers) == sorted(d.ok["number"]) and len(info.predicted_ms) == COUNTS["ok"]
    assert -1 <= info.spearman <= 1 and info.spearman > 0      # a model that ranks backwards is broken
    assert "Spearman" in info.title and f"{info.spearman:+.3f}" in info.title
    # predictions use the compiled kernel's recorded registers and shared memory
    row = d.ok.set_index("number").loc[BEST_TRIAL]
    expected = perfmodel.predict(d.problem, KernelConfig.of("m2rnn_fwd", row["config"]), d.hw,
                                 {"n_regs": int(row["n_regs"]), "shared": int(row["shared"])})
    assert info.predicted_ms[info.numbers.index(BEST_TRIAL)] == pytest.approx(expected.time_ms)
    names = [t.name for t in _get_model_fit_plot(info).data]
    assert "y = x" in names


def test_model_figures_skipped_without_profile_or_measurements(data):
    from m2tune.report.figures import _get_model_fit_info, _get_roofline_info
    assert "no hardware profile" in _get_model_fit_info(data[NO_PROFILE]).note
    assert "no hardware profile" in _get_roofline_info(data[NO_PROFILE]).note
    assert any("acme-x1" in n for n in data[NO_PROFILE].notes)
    assert "predictions" in _get_model_fit_info(data[MODEL]).note


def test_roofline_names_the_binding_term(data):
    from m2tune.report.figures import TERMS, _get_roofline_info, _get_roofline_plot
    info = _get_roofline_info(data[H200])
    assert info.note is None and len(info.labels) == 10 and info.numbers[0] == BEST_TRIAL
    assert info.time_us[0] == pytest.approx(BEST_MS * 1e3 / S, abs=1e-4)
    assert info.time_us == sorted(info.time_us)
    assert len(info.binding) == len(info.labels) and set(info.binding) <= set(TERMS)
    for i in range(len(info.labels)):
        terms = {t: getattr(info, f"{t}_us")[i] for t in TERMS}
        assert info.bound_us(i) == max(terms.values()) > 0       # the binding term is the largest bound
    fig = _get_roofline_plot(info)
    assert fig.layout.barmode == "group" and len(fig.data) == 1 + len(TERMS)
    assert all("bound by" in h for h in fig.data[0].hovertext)


def test_failures_by_category(data):
    from m2tune.report.figures import _get_failures_info
    info = _get_failures_info(data[H200])
    assert dict(zip(info.categories, info.counts)) == {"invalid-config": 36, "pruned-by-model": 14}
    assert "255 registers" in info.reasons[0]


def test_model_backend_is_labelled_predicted(data):
    from m2tune.report.figures import (_get_failures_info, _get_history_info, _get_param_effects_info,
                               _get_roofline_info)
    d = data[MODEL]
    for get in (_get_history_info, _get_param_effects_info, _get_roofline_info, _get_failures_info):
        assert get(d).title.startswith("PREDICTED"), get.__name__
    roof = _get_roofline_info(d)
    assert roof.time_label == "predicted" and max(roof.waves) > 1
    # a predicted time is its binding bound over all waves (plus the launch): the bars must agree
    for i in range(len(roof.labels)):
        assert roof.time_us[i] == pytest.approx(roof.bound_us(i), rel=1e-2), roof.labels[i]
    assert not _get_history_info(data[H200]).title.startswith("PREDICTED")


def test_write_report(storage_url, tmp_path):
    from m2tune.report.page import write_report
    path = write_report(storage_url, tmp_path / "out" / "report.html")
    text = path.read_text(encoding="utf-8")
    for name in (H200, MODEL, NO_PROFILE):
        assert f"<h2 id=\"{name}\">{name}" in text
    assert len(re.findall(r"plotly\.js v\d", text)) == 1           # plotly.js inlined exactly once
    assert text.count("Plotly.newPlot(") == 5 + 4 + 3              # figures: all, no model fit, neither model one
    section = text[text.index(f'<h2 id="{MODEL}">'):text.index(f'<h2 id="{NO_PROFILE}">')]
    assert 'class="predicted">PREDICTED' in section and "PREDICTED by the performance model" in section
    assert "26.0381 ms" in text and "10.35x" in text                # the confirm stage's default config
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
