"""Every user mistake on the command line: one line `Error: ...`, exit code 2, no traceback, and
nothing drawn or created before it."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from m2tune.cli import main


def _empty_storage(tmp_path) -> str:
    import optuna
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.create_study(study_name="not-m2tune", storage=url)        # a study without trials
    return url


MISTAKES = {
    "storage-folder-missing": (["tune", "--backend", "model", "--gpu", "nvidia-h200", "--trials", "1",
                                "--storage", "sqlite:////no/such/dir/x.db"], "the folder /no/such/dir does not exist"),
    "storage-not-a-url": (["tune", "--backend", "model", "--gpu", "nvidia-h200", "--trials", "1",
                           "--storage", "/tmp/x.db"], "is not a URL"),
    "space-missing": (["tune", "--backend", "model", "--gpu", "nvidia-h200", "--space", "missing.yaml"], "missing"),
    "sampler-not-installed": (["tune", "--sampler", "cmaes"], "--sampler"),
    "trials-negative": (["tune", "--trials", "-3"], "--trials"),
    "ad-hoc-shape-missing-field": (["tune", "--backend", "model", "--gpu", "nvidia-h200",
                                    "--shape", "B=1,S=64,K=16"], "missing V, N"),
    "ad-hoc-shape-bad-value": (["tune", "--backend", "model", "--gpu", "nvidia-h200",
                                "--shape", "B=1,S=0,K=16,V=16,N=2"], "S must be a positive integer"),
    "predict-bad-variant": (["predict", "--variant", "bad"], "--variant"),
    "predict-bad-config": (["predict", "--config", "BLOCK_K=3"], "BLOCK_K=3"),
    "predict-unknown-parameter": (["predict", "--config", "STRAY=1"], "no parameter STRAY"),
    "predict-unknown-gpu": (["predict", "--gpu", "nvidia-z999"], "nvidia-z999"),
    "show-bad-shape": (["show", "--shape", "nope"], "--shape"),
    "show-bad-ad-hoc-shape": (["show", "--shape", "B=1,S=64,K=16,V=16"], "missing N"),
    "bench-bad-grid": (["bench", "--shape", "tiny", "--grid", "nope"], "no grid 'nope'"),
}


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_a_mistake_is_one_line_and_exit_code_2(name):
    args, words = MISTAKES[name]
    result = CliRunner().invoke(main, args)
    _assert_one_line(result, words)


def _assert_one_line(result, words):
    text = result.output.strip()
    assert result.exit_code == 2, (result.exit_code, text)
    assert "Traceback" not in text and result.exception is None or isinstance(result.exception, SystemExit), text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), text
    assert words in lines[0], (words, lines[0])


def test_export_of_an_unknown_study_names_the_ones_there(tmp_path):
    url = _empty_storage(tmp_path)
    result = CliRunner().invoke(main, ["export", "--storage", url, "--study", "unknown", "--out", str(tmp_path)])
    _assert_one_line(result, "no study 'unknown'")
    assert "'not-m2tune'" in result.output


def test_export_with_nothing_to_export_is_an_error(tmp_path):
    url = _empty_storage(tmp_path)
    result = CliRunner().invoke(main, ["export", "--storage", url, "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and "Error: nothing to export" in result.output, result.output
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("command", ["export", "report"])
def test_read_only_commands_on_a_mistyped_path_create_nothing(tmp_path, command):
    missing = tmp_path / "typo.db"
    result = CliRunner().invoke(main, [command, "--storage", f"sqlite:///{missing}"])
    _assert_one_line(result, "no study storage at")
    assert not missing.exists()


def test_export_writes_to_the_working_folder_not_the_package(tmp_path, monkeypatch):
    from m2tune.cli.options import profiles_out
    from m2tune.runtime import ENV_OVERRIDE
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_OVERRIDE, raising=False)
    assert profiles_out(None).resolve() == (tmp_path / "profiles").resolve()
    monkeypatch.setenv(ENV_OVERRIDE, str(tmp_path / "mine"))
    assert profiles_out(None) == tmp_path / "mine"


@pytest.mark.parametrize("args", [["show", "--json"], ["check", "--json"], ["shapes", "--json"],
                                  ["predict", "--gpu", "nvidia-h200", "--json"]])
def test_json_everywhere(args):
    import json
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)


def test_one_name_for_the_gpu():
    for command in ("tune", "predict", "show"):
        text = CliRunner().invoke(main, [command, "--help"]).output
        assert "--gpu" in text, command
