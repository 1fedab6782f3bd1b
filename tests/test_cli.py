"""The m2tune command end to end (interpreter backend on machines without a GPU)."""
import json

import pytest
import torch
from click.testing import CliRunner

import m2tune
from m2tune.cli import main


def test_version_and_help():
    runner = CliRunner()
    assert m2tune.__version__ in runner.invoke(main, ["--version"]).output
    out = runner.invoke(main, ["--help"]).output
    assert "shapes" in out and "bench" in out


def test_shapes_lists_paper_shapes():
    out = CliRunner().invoke(main, ["shapes"]).output
    assert "paper-7b" in out and "N=132" in out and "paper-400m" in out and "tiny" in out


def test_bench_validates_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", "--shape", "tiny", "--grid", "cpu", "--configs", "1",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert len(data["rows"]) == 1 and all(r["status"] == "ok" for r in data["rows"])
    assert data["best"]["max_error"] < 1e-5
    assert data["environment"]["torch"] and data["problem"]["K"] == 32
    assert "validated" in result.output and "validation plan v2" in result.output
    assert {"chunks", "h0", "packed"} <= set(data["rows"][0]["validated"]["paths"])


def test_predict_names_the_binding_term_for_a_target_gpu():
    result = CliRunner().invoke(main, ["predict", "--shape", "paper-7b", "--target", "nvidia-h200",
                                       "--config", "MATMUL=dot_bf16,TANH=approx"])
    assert result.exit_code == 0, result.output
    assert "predicted for NVIDIA H200" in result.output and "bound by" in result.output
    bad = CliRunner().invoke(main, ["predict", "--target", "nvidia-h200", "--config", "BLOCK_K=3"])
    assert bad.exit_code != 0 and "BLOCK_K=3 not in" in bad.output
    missing = CliRunner().invoke(main, ["predict", "--target", "acme-x1"])
    assert missing.exit_code != 0 and "no hardware.json for 'acme-x1'" in missing.output


def test_calibrate_refits_a_committed_profile_on_the_cpu(tmp_path):
    """--refit reruns the fit from the file's raw rows: the committed constants come back."""
    from pathlib import Path

    from m2tune.model.hardware import HardwareProfile
    shipped = Path(__file__).resolve().parent.parent / "profiles" / "nvidia-h200" / "hardware.json"
    copy = tmp_path / "hardware.json"
    copy.write_text(shipped.read_text())
    result = CliRunner().invoke(main, ["calibrate", "--refit", str(copy)])
    assert result.exit_code == 0, result.output
    before, after = HardwareProfile.load(shipped).constants, HardwareProfile.load(copy).constants
    assert before.keys() == after.keys()
    for kernel in before:
        assert before[kernel].keys() == after[kernel].keys()
        for name, value in before[kernel].items():
            assert abs(after[kernel][name] - value) <= 1e-9 * max(1.0, abs(value)), (kernel, name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_calibrate_without_a_gpu_says_so():
    result = CliRunner().invoke(main, ["calibrate"])
    assert result.exit_code != 0 and "none is visible here" in result.output
