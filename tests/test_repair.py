"""Repairs of rejected candidates (m2tune/tuning/repair.py): on the lean backward at square-64,
where 0.23% of the space is feasible and nearly every starting point fails the register budget (two
fit: the space file's old square-64 entry and the shipped one), a study without repairs ran one trial
before the cap on free answers stopped it."""
from __future__ import annotations

import time

import pytest

from m2tune import status, variants
from m2tune.model import perfmodel
from m2tune.tuning import shipped
from m2tune.tuning.backends import Outcome, model_config
from m2tune.tuning.options import TuneOptions
from m2tune.tuning.repair import key, reasons, repair
from m2tune.tuning.space import problem_for
from m2tune.tuning.slots import Slots
from m2tune.tuning.space_file import load_space
from m2tune.tuning.trial import TrialResult
from m2tune.tuning.tune import Tuner
from tests.tuning import TARGET, assert_no_repeats, scored

LEAN, THIN = "m2rnn_bwd_lean", "square-64"


@pytest.fixture(scope="module")
def lean():
    space = load_space(LEAN)
    return space, variants.spec(LEAN), problem_for(space, THIN)


def test_a_proposal_broken_in_one_parameter_is_repaired_in_one(lean):
    space, spec, problem = lean
    # the default with 4 warps passes at square-64; with 1 warp its 16x64 tile needs ~940 registers
    good = {**{n: space.defaults[n] for n in space.params}, "num_warps": 4}
    assert reasons(space, spec, problem, good) == []
    broken = {**good, "num_warps": 1}
    assert any("registers" in w for w in reasons(space, spec, problem, broken))

    fixed = repair(space, spec, problem, broken, seed=7)
    assert fixed is not None and reasons(space, spec, problem, fixed) == []
    assert set(fixed) == set(space.params) and all(fixed[n] in space.params[n] for n in fixed)
    assert sum(fixed[n] != broken[n] for n in fixed) == 1, fixed
    assert repair(space, spec, problem, broken, seed=7) == fixed             # deterministic for a seed


def test_a_repair_skips_what_the_study_holds_and_says_none_when_nothing_fits(lean, tmp_path):
    space, spec, problem = lean
    broken = {**{n: space.defaults[n] for n in space.params}, "num_warps": 1}
    first = repair(space, spec, problem, broken, seed=7)
    # the only change of one parameter taken: two, in an order the seed draws
    others = [repair(space, spec, problem, broken, seed=seed, exclude={key(first)}) for seed in range(4)]
    for other in others:
        assert other is not None and reasons(space, spec, problem, other) == []
        assert sum(other[n] != broken[n] for n in other) == 2, other
    assert len({key(o) for o in others}) > 1
    assert repair(space, spec, problem, broken, seed=2, exclude={key(first)}) == others[2]
    # fma products with 1 warp never hold a 64-wide tile: nothing to find, and the search ends
    wide = tmp_path / "wide.yaml"
    wide.write_text("variant: m2rnn_fwd\nparams:\n  BLOCK_K: {choices: [16, 32, 64, 128]}\n"
                    "  PREFETCH: {low: 0, high: 2}\nbuckets:\n"
                    "  - {name: wide, B: 4, S: 64, K: 128, V: 64, N: 2, shared_qk: true, dtype: float32}\n")
    hopeless = load_space(str(wide))
    t0 = time.monotonic()
    assert repair(hopeless, variants.spec("m2rnn_fwd"), problem_for(hopeless, "wide"),
                  {"BLOCK_K": 16, "PREFETCH": 0}, seed=1) is None
    assert time.monotonic() - t0 < 5


class ModelOnlySlots(Slots):
    def evaluators(self, tuner) -> list:
        return [ModelOnly(tuner.hw)]


class ModelOnly:
    """The model backend's score without its interpreter check, which takes minutes per lean trial
    at K=64 V=64 on a CPU: this test is about which candidates run, not their validation."""

    def __init__(self, hw) -> None:
        self.hw = hw

    def evaluate(self, variant, problem, config, *, seed: int) -> Outcome:
        try:
            ms = perfmodel.predict(problem, model_config(config), self.hw).time_ms
        except perfmodel.ModelError as exc:
            return Outcome(TrialResult(status=status.OUT_OF_RESOURCES, message=str(exc)), None, predicted=True)
        return Outcome(TrialResult(status=status.OK), ms, predicted=True, attrs={"predicted_ms": ms})

    def close(self) -> None:
        pass


def test_a_thin_bucket_runs_its_trials_through_repairs(tmp_path):
    wanted = 5
    tuner = Tuner(TuneOptions(variant=LEAN, shape=THIN, backend="model", target=TARGET, trials=wanted,
                              storage=f"sqlite:///{tmp_path}/s.db"))
    result = tuner.run(ModelOnlySlots())

    trials = tuner.study.get_trials(deepcopy=False)
    ok = [t for t in trials if t.user_attrs.get("status") == status.OK]
    assert len(ok) == wanted and result["stop_reason"] is None, result
    rejected = [t for t in trials if t.user_attrs.get("status") == status.INVALID_CONFIG]
    assert rejected and all("repaired_to" in t.user_attrs for t in rejected)
    repairs = [t for t in trials if "repair_of" in t.user_attrs]
    # what ran is a repair or a starting point the bucket fits: the space file's old square-64 entry
    # or the config the profile ships for the bucket (m2tune/tuning/shipped.py)
    starts = tuner.space.starting_points() + [p for p, _ in shipped.points(LEAN, TARGET, tuner.problem, tuner.space)]
    fitting_starts = [p for p in starts if not reasons(tuner.space, tuner.spec, tuner.problem, p)]
    assert len(fitting_starts) < wanted
    unrepaired = [t for t in ok if "repair_of" not in t.user_attrs]
    assert repairs and len(unrepaired) <= len(fitting_starts)
    assert all(t.system_attrs.get("fixed_params") in fitting_starts for t in unrepaired)
    by_number = {t.number: t for t in trials}
    for t in repairs:
        assert by_number[t.user_attrs["repair_of"]].user_attrs["repaired_to"] == t.system_attrs["fixed_params"]
        assert reasons(tuner.space, tuner.spec, tuner.problem, t.system_attrs["fixed_params"]) == []
        if t.state.is_finished():
            assert t.user_attrs["status"] != "duplicate", t.number
    assert_no_repeats(trials)
    assert len({key(t.system_attrs["fixed_params"]) for t in repairs}) == len(repairs)
    assert len(scored(trials)) - len(ok) == len(rejected)
