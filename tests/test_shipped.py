"""A study starts from the configs the profiles ship for its bucket (m2tune/tuning/shipped.py)."""
from __future__ import annotations

import json

import pytest

from m2tune.profile_file import load
from m2tune.resources import data_dir
from m2tune.runtime import ENV_OVERRIDE
from m2tune.tuning import shipped
from m2tune.tuning.options import TuneOptions
from m2tune.tuning.space import problem_for
from m2tune.tuning.space_file import load_space
from m2tune.tuning.tune import Tuner
from tests.tuning import TARGET

FWD = "m2rnn_fwd"
BUNDLED = data_dir("profiles") / TARGET / f"{FWD}.json"


def _entry(bucket_name: str):
    return next(e for e in load(BUNDLED).entries if e.name == bucket_name)


@pytest.fixture
def no_override(monkeypatch):
    monkeypatch.delenv(ENV_OVERRIDE, raising=False)


def test_the_bundled_paper_7b_entry_and_its_training_config_are_starting_points(no_override):
    space = load_space(FWD)
    entry = _entry("paper-7b")
    found = shipped.points(FWD, TARGET, problem_for(space, "paper-7b"), space)
    searched = list(space.distributions())
    assert [p for p, _ in found] == [{k: entry.config[k] for k in searched},
                                     {k: entry.raw["training"]["config"][k] for k in searched}]
    assert all(str(BUNDLED) in origin and "paper-7b" in origin for _, origin in found)
    assert "training" in found[1][1]
    # a bucket with no entry, another GPU: nothing
    assert shipped.points(FWD, TARGET, problem_for(space, "tiny"), space) == []
    assert shipped.points(FWD, TARGET, problem_for(space, "paper-7b-fp32"), space) == []     # dtype counts
    assert shipped.points(FWD, "no-such-gpu", problem_for(space, "paper-7b"), space) == []


def test_a_broken_or_foreign_entry_gives_no_point_and_no_error(tmp_path, monkeypatch):
    space = load_space(FWD)
    problem = problem_for(space, "paper-7b")
    mine = tmp_path / "mine" / TARGET
    mine.mkdir(parents=True)
    monkeypatch.setenv(ENV_OVERRIDE, str(tmp_path / "mine"))
    (mine / f"{FWD}.json").write_text("{ not json")
    bundled = shipped.points(FWD, TARGET, problem, space)
    assert len(bundled) == 2                         # the unreadable file only drops its own points

    doc = json.loads(BUNDLED.read_text())
    doc["entries"] = [e for e in doc["entries"] if e["name"] == "paper-7b"]
    doc["entries"][0].pop("training", None)
    config = doc["entries"][0]["config"]
    config["BLOCK_K"] = 1                             # the spec allows it, the space does not offer it
    (mine / f"{FWD}.json").write_text(json.dumps(doc))
    assert shipped.points(FWD, TARGET, problem, space) == bundled

    config["BLOCK_K"] = 64
    del config["PREFETCH"]                            # a parameter the entry predates: the default
    (mine / f"{FWD}.json").write_text(json.dumps(doc))
    first, origin = shipped.points(FWD, TARGET, problem, space)[0]
    assert first["BLOCK_K"] == 64 and first["PREFETCH"] == space.defaults["PREFETCH"]
    assert str(mine) in origin


def test_a_study_enqueues_the_shipped_config_named_by_its_origin(tmp_path, no_override):
    tuner = Tuner(TuneOptions(variant=FWD, shape="paper-7b", backend="model", target=TARGET, trials=1,
                              storage=f"sqlite:///{tmp_path}/s.db"))
    waiting = tuner.study.get_trials(deepcopy=False)
    marked = [t for t in waiting if "start" in t.user_attrs]
    want = {k: _entry("paper-7b").config[k] for k in tuner.distributions}
    # right after the default, ahead of the space file's starting points: a short study tries it
    assert [t.number for t in marked] == [1, 2] and waiting[1].system_attrs["fixed_params"] == want
    assert all(str(BUNDLED) in t.user_attrs["start"] for t in marked)
    # resuming enqueues nothing twice
    again = Tuner(TuneOptions(variant=FWD, shape="paper-7b", backend="model", target=TARGET, trials=1,
                              storage=f"sqlite:///{tmp_path}/s.db"))
    assert len(again.study.get_trials(deepcopy=False)) == len(waiting)


def test_a_study_can_leave_the_shipped_configs_out(tmp_path, no_override):
    """What bench/replay_efficiency.py does: it measures the sampler, not the profile."""
    tuner = Tuner(TuneOptions(variant=FWD, shape="paper-7b", backend="model", target=TARGET, trials=1,
                              storage=f"sqlite:///{tmp_path}/s.db", shipped_starts=False))
    assert not any("start" in t.user_attrs for t in tuner.study.get_trials(deepcopy=False))
    assert len(tuner.study.get_trials(deepcopy=False)) == len(tuner.space.starting_points())
