"""How an export merges into a profile file that has an entry for the study's bucket already."""
from __future__ import annotations

import json

from m2tune.tuning.export import _keeps, export
from m2tune.tuning.options import TuneOptions
from m2tune.tuning.tune import Tuner
from tests.tuning import TARGET


def _model_study(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    Tuner(TuneOptions(shape="tiny", backend="model", target=TARGET, trials=2, storage=storage)).run()
    return storage


def test_a_prediction_never_replaces_a_measured_entry(tmp_path, capsys):
    storage = _model_study(tmp_path)
    (path,) = export(storage, tmp_path / "profiles")
    doc = json.loads(path.read_text())
    entry = doc["entries"][0]
    assert entry["measured"] is False
    # the same bucket, as a GPU study would have written it
    entry.update(measured=True, time_ms=0.5, study="m2rnn_fwd/tiny/nvidia-h200/gpu")
    entry.pop("predicted_for")
    path.write_text(json.dumps(doc))
    capsys.readouterr()
    export(storage, tmp_path / "profiles")
    kept = json.loads(path.read_text())["entries"]
    assert len(kept) == 1 and kept[0]["measured"] is True and kept[0]["time_ms"] == 0.5
    said = capsys.readouterr().out
    assert "kept the measured entry (0.500 ms" in said and "only predicted it" in said


def test_a_slower_measurement_replaces_the_entry_and_says_so(tmp_path, capsys):
    have = {"name": "b", "bucket": {}, "measured": True, "time_ms": 2.34, "trials": 31, "study": "old"}
    slower = {**have, "time_ms": 2.50, "trials": 20, "study": "new"}
    assert _keeps(tmp_path / "f.json", have, slower) is False
    said = capsys.readouterr().out
    assert "2.500 ms (20 trials, study new) replaces 2.340 ms (31 trials, study old)" in said
    assert _keeps(tmp_path / "f.json", have, {**slower, "time_ms": 2.0}) is False
    assert capsys.readouterr().out == ""             # faster: nothing to say
    assert _keeps(tmp_path / "f.json", None, slower) is False
    assert _keeps(tmp_path / "f.json", {**have, "measured": False}, {**slower, "measured": False}) is False
