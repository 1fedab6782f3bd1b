"""The m2tune command end to end (interpreter backend on machines without a GPU)."""
import json

from click.testing import CliRunner

import m2tune
from cli import main


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
    result = CliRunner().invoke(main, ["bench", "--shape", "tiny", "--grid", "cpu", "--configs", "2",
                                       "--lengths", "4,16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert len(data["rows"]) == 2 and all(r["status"] == "ok" for r in data["rows"])
    assert data["best"]["max_error"] < 1e-5
    assert data["environment"]["torch"] and data["problem"]["K"] == 32
    assert "validated" in result.output
