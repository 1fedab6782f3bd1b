"""m2tune report on the committed bench and training result files (bench/results/), CPU only: each
format read by its keys, numbers as the files hold them, the throughput page's data and figures, and
the one-line error for a file of no known format."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BENCH_7B = RESULTS / "2026-11-29-h200-forward-tf32x3" / "fwd_paper-7b.json"     # m2tune bench --out
SUMMARY = RESULTS / "2026-12-01-h200-lean-backward" / "summary.json"             # training rows, "variant"
TRAINING = RESULTS / "2026-11-29-h200-training" / "training.json"                # training rows, "config_name"
ENTRY = RESULTS / "2026-11-29-h200-training-entry" / "training.json"             # training rows, "runtime_choice"
SHIP = RESULTS / "2026-12-01-h200-lean-ship"                                     # lean.db + tuned-config files
UNKNOWN = RESULTS / "2026-12-01-h200-lean-backward" / "current_configs.json"
TOKENS_7B = 4 * 4096


def _rows(path: Path):
    from m2tune.report.results import read_result, results_frame
    return results_frame(read_result(path))


def _one(frame, **where):
    sel = frame
    for key, value in where.items():
        sel = sel[sel[key] == value]
    assert len(sel) == 1, (where, sel[["shape", "pass", "impl"]])
    return sel.iloc[0]


def test_bench_file_best_default_and_eager_reference():
    frame = _rows(BENCH_7B)
    data = json.loads(BENCH_7B.read_text())
    assert set(frame["pass"]) == {"forward"} and set(frame["label"]) == {"measured"}
    best = _one(frame, kind="other")
    assert best["impl"] == "best of bench grid 'h200'" and best["ms"] == data["best"]["median_ms"]
    assert best["config"] == "BLOCK_B=2 MATMUL=dot_bf16 TANH=approx num_warps=2" and best["inference_only"]
    # the grid's first row is the template default (fma, exact tanh, ...): 26.06 ms
    default = _one(frame, kind="default")
    assert default["ms"] == pytest.approx(26.0641, abs=1e-4) and default["ms"] == data["rows"][0]["median_ms"]
    eager = _one(frame, kind="reference")
    assert eager["ms"] == pytest.approx(872.712, abs=1e-3)
    assert (frame["tokens"] == TOKENS_7B).all()
    assert frame["tokens_per_s"].tolist() == pytest.approx((TOKENS_7B / (frame["ms"] / 1e3)).tolist())
    assert frame["extra_mib"].isna().all()                  # bench does not measure memory


def test_training_rows_by_each_naming():
    summary = _rows(SUMMARY)
    assert len(summary) == 30 and summary["pass"].value_counts().to_dict() == {"forward+backward": 15, "backward": 15}
    run = _one(summary, shape="paper-7b", impl="runtime", **{"pass": "forward+backward"})
    assert run["ms"] == pytest.approx(16.334, abs=1e-3) and run["extra_mib"] == pytest.approx(921.0, abs=0.1)
    assert run["kind"] == "tuned" and "m2rnn_fwd + m2rnn_bwd_lean: exact bucket paper-7b" in run["note"]
    bwd = _one(summary, shape="paper-7b", impl="runtime", **{"pass": "backward"})
    assert bwd["ms"] == pytest.approx(12.834, abs=1e-3)
    assert summary.loc[summary["pass"] == "backward", "extra_mib"].isna().all()    # memory is the whole step's
    # where the runtime had no tuned entry it ran the template's default: drawn as one
    assert _one(summary, shape="square-64", impl="runtime", **{"pass": "forward+backward"})["kind"] == "default"
    # a shape without a name: its tokens from the row's problem text (B=1 S=16384)
    long = _one(summary, shape="k64-v16-b1-n132-s16384", impl="lean", **{"pass": "forward+backward"})
    assert long["tokens"] == 16384 and long["tokens_per_s"] == pytest.approx(16384 / (long["ms"] / 1e3))
    named = _rows(TRAINING)
    rejected = _one(named, shape="paper-7b", impl="bf16-ckpt64")
    assert not rejected["valid"] and rejected["note"].startswith("REJECTED")
    assert _one(named, shape="paper-7b", impl="tf32x3-ckpt64")["extra_mib"] == pytest.approx(713.26, abs=0.01)
    entry = _one(_rows(ENTRY), shape="paper-400m")
    assert entry["impl"] == "runtime's choice" and entry["kind"] == "tuned" and entry["tokens"] == 8 * 4096


def test_tuned_config_files_measured_and_predicted():
    ship = _rows(SHIP / "m2rnn_fwd.json")
    tuned = _one(ship, impl="tuned (m2rnn_fwd)")
    assert tuned["label"] == "measured" and tuned["ms"] == pytest.approx(2.3417, abs=1e-4) and tuned["inference_only"]
    assert _one(ship, impl="tuned for training (m2rnn_fwd)")["ms"] == pytest.approx(2.6396, abs=1e-4)
    assert _one(ship, impl="template default (m2rnn_fwd)")["ms"] == pytest.approx(26.0819, abs=1e-4)
    shipped = _rows(ROOT / "profiles" / "nvidia-h200" / "m2rnn_bwd.json")
    assert set(shipped["pass"]) == {"backward"}
    # entries of buckets never run on the GPU carry the model's prediction, and say so
    assert set(shipped.loc[shipped["shape"] == "k32-v16-b8-n32-s2048", "label"]) == {"predicted"}
    assert set(shipped.loc[shipped["shape"] == "paper-7b", "label"]) == {"measured"}


def test_a_file_of_no_known_format_is_a_one_line_error(tmp_path):
    from m2tune.cli import main
    from m2tune.report.inputs import collect
    from m2tune.report.results import ResultFormatError
    with pytest.raises(ResultFormatError) as exc:
        collect([UNKNOWN])
    message = str(exc.value)
    assert "\n" not in message and str(UNKNOWN) in message and "paper-7b" in message      # its keys, named
    notes = tmp_path / "notes.txt"
    notes.write_text("not a result")
    result = CliRunner().invoke(main, ["report", str(notes), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and str(notes) in result.output
    # in a folder the same file is skipped and listed: result folders hold notes and config lists too
    found = collect([UNKNOWN.parent])
    assert found.result_files == [str(SUMMARY)] and any(str(UNKNOWN) in s for s in found.skipped)


def test_throughput_info_per_pass():
    from m2tune.report.inputs import collect
    from m2tune.report.results import results_frame
    from m2tune.report.throughput import _get_throughput_info, _get_throughput_plot
    # the same bench run twice, from two folders: each implementation is then named by its folder
    twin = RESULTS / "2026-11-29-h200-forward" / "fwd_paper-7b.json"
    frame = results_frame(collect([SHIP / "m2rnn_fwd.json", BENCH_7B, twin, SUMMARY]).rows)
    fwd = _get_throughput_info(frame, "forward")
    assert fwd.shapes == ["paper-7b"] and not fwd.has_memory
    kinds = [b.kind for b in fwd.bars]
    assert kinds == sorted(kinds, key=["tuned", "other", "default", "reference"].index)
    names = [b.impl for b in fwd.bars]
    assert "eager PyTorch reference · 2026-11-29-h200-forward" in names
    assert "eager PyTorch reference · 2026-11-29-h200-forward-tf32x3" in names
    assert "tuned (m2rnn_fwd)" in names and "template default (m2rnn_fwd)" in names
    assert all(b.text.endswith("measured") for b in fwd.bars)
    both = _get_throughput_info(frame, "forward+backward")
    assert both.has_memory and both.shapes[:2] == ["paper-7b", "paper-400m"] and len(both.bars) == 15
    fig = _get_throughput_plot(both)
    bars = fig.data[0]
    assert fig.layout.xaxis.type == "log" and len(bars.y) == 2 and len(bars.y[0]) == 15       # shape, implementation
    assert "921 MiB · measured" in fig.data[1].text
    # predicted numbers are labelled on the bar and hatched (the backward profile still ships some;
    # the forward's are all measured since 2026-12-02)
    predicted = results_frame(collect([ROOT / "profiles" / "nvidia-h200" / "m2rnn_bwd.json"]).rows)
    info = _get_throughput_info(predicted, "backward")
    assert info.title.startswith("PARTLY PREDICTED")
    marked = [(b.text, p) for b, p in zip(info.bars, _get_throughput_plot(info).data[0].marker.pattern.shape)
              if b.label == "predicted"]
    assert marked and all(t.endswith("PREDICTED") and p == "/" for t, p in marked)
    assert _get_throughput_info(frame, "no such pass") is None


def test_report_of_folders_and_files(tmp_path):
    from m2tune.cli import main
    ship = tmp_path / "ship"
    shutil.copytree(SHIP, ship)          # SQLite may write a journal beside a database it opens
    out = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["report", str(ship), str(SUMMARY), str(BENCH_7B), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert '<section id="throughput">' in text and text.index('id="throughput"') < text.index('id="m2rnn_fwd-paper-7b')
    for figure in ("throughput-forward", "throughput-forward-backward", "throughput-backward"):
        assert f'id="{figure}"' in text
    for study in ("m2rnn_fwd", "m2rnn_bwd", "m2rnn_bwd_lean"):
        assert f'id="{study}-paper-7b-nvidia-h200-gpu-roofline"' in text
    assert text.count("Plotly.newPlot(") == 3 + 3 * 4
