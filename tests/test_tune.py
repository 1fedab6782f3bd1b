"""`m2tune tune` on the model backend (CPU only): a study survives bad candidates, a kill, and
its own command line.

Every trial runs in a real worker process in the Triton interpreter and is stored in a real
Optuna storage (SQLite here; tests/test_tune_postgres.py runs two processes on PostgreSQL).
Trial counts are small: one trial is a few seconds in the interpreter.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import replace

import optuna
import pytest

from m2tune import status
from m2tune.tuning.samplers import SamplerError
from m2tune.tuning.storage import quiet
from m2tune.status import FREE
from m2tune.tuning.duplicates import UNDECIDED
from m2tune.tuning.options import TuneError, TuneOptions
from m2tune.tuning.tune import Tuner
from tests import planted_variants as planted
from tests.tuning import (ROOT, SHAPE, SMALL_BUCKET, SMALL_SPACE, TARGET, assert_no_repeats, environment, replay_grid,
                          params_key, scored, small_space, trials_of, tune_command)

RUNNING = optuna.trial.TrialState.RUNNING
# every planted fault, each recorded with its category while the study goes on
EXPECTED = {"none": status.OK, "crash": status.CRASHED, "hang": status.TIMEOUT, "wrong": status.WRONG_RESULT}
PLANTED_SPACE = f"""\
variant: {planted.NAME}
params:
  FAULT: {{choices: [none, crash, hang, wrong]}}
enqueue:
  - {{FAULT: crash}}
  - {{FAULT: hang}}
  - {{FAULT: wrong}}
buckets:
  - {{name: {SMALL_BUCKET}, B: 2, S: 16, K: 16, V: 16, N: 2, shared_qk: true, dtype: float32}}
"""
# two points: the forward's default MATMUL (fma) and dot_ieee, everything else at its default
GRID_SPACE = f"""\
variant: m2rnn_fwd
params:
  MATMUL: {{choices: [fma, dot_ieee]}}
buckets:
  - {{name: {SMALL_BUCKET}, B: 2, S: 16, K: 16, V: 16, N: 2, shared_qk: true, dtype: float32}}
"""


def options(tmp_path, **kw) -> TuneOptions:
    return TuneOptions(**{"backend": "model", "target": TARGET, "storage": f"sqlite:///{tmp_path}/s.db",
                          "trial_timeout_s": 60.0, **kw})


def test_planted_faults_are_recorded_and_the_study_completes(tmp_path):
    space = tmp_path / "planted.yaml"
    space.write_text(PLANTED_SPACE)
    # the hang costs the whole time limit: 20 s leaves a busy machine room for the honest trials
    tuner = Tuner(options(tmp_path, variant=planted.NAME, space=str(space), shape=SMALL_BUCKET, trials=4,
                          sampler="random", trial_timeout_s=20.0,
                          extra_variants=((planted.NAME, planted.SPEC_REF, planted.MODULE),)))
    summary = tuner.run()

    trials = tuner.study.get_trials(deepcopy=False)
    assert all(t.state.is_finished() for t in trials), [(t.number, t.state) for t in trials]
    by_fault = {t.params["FAULT"]: t for t in scored(trials)}
    assert len(scored(trials)) == 4 and set(by_fault) == set(EXPECTED), [t.params for t in trials]
    for fault, category in EXPECTED.items():
        t = by_fault[fault]
        assert t.user_attrs["status"] == category, (fault, t.user_attrs)
    good = by_fault["none"]
    assert good.state == optuna.trial.TrialState.COMPLETE and good.value == good.user_attrs["predicted_ms"] > 0
    for fault in ("crash", "hang", "wrong"):
        assert by_fault[fault].state == optuna.trial.TrialState.FAIL and by_fault[fault].value is None
    assert "SIGABRT" in by_fault["crash"].user_attrs["message"]
    assert "no result within 20 s" in by_fault["hang"].user_attrs["message"]
    assert "too large" in by_fault["wrong"].user_attrs["message"]

    assert summary["scored"] == 4 and summary["categories"] == {
        status.OK: 1, status.CRASHED: 1, status.TIMEOUT: 1, status.WRONG_RESULT: 1}
    assert summary["best"]["trial"] == good.number and summary["predicted"] is True


def test_kill_and_resume_loses_nothing(tmp_path):
    storage, study, wanted = f"sqlite:///{tmp_path}/s.db", "resume", 5
    command = tune_command(storage, study, wanted, "--json", *small_space(tmp_path), shape=SMALL_BUCKET)
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        # its own session: the kill below takes the whole process group, as a lost shell would
        first = subprocess.Popen(command, cwd=ROOT, env=environment(), start_new_session=True,
                                 stdout=out, stderr=subprocess.STDOUT)
    try:
        in_flight = _wait_for_trial_in_flight(first, storage, study, log, finished=2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    before = {t.number: t for t in trials_of(storage, study) if t.state.is_finished()}
    killed = [t.number for t in trials_of(storage, study) if t.state == RUNNING]
    assert killed, f"nothing was running when the first run was killed (in flight before: {in_flight})"

    second = subprocess.run(command, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    summary = json.loads(second.stdout)

    trials = trials_of(storage, study)
    by_number = {t.number: t for t in trials}
    assert not [t.number for t in trials if t.state == RUNNING]
    assert len(scored(trials)) == wanted == summary["scored"]
    assert_no_repeats(trials)
    # what the first run finished is still there, untouched
    for number, t in before.items():
        now = by_number[number]
        assert (now.state, now.value, now.params, now.user_attrs.get("status")) == \
               (t.state, t.value, t.params, t.user_attrs.get("status")), number
    # what it was running was failed as an orphan, and its candidate scored by the resumed run
    scored_params = {params_key(t) for t in scored(trials)}
    for number in killed:
        orphan = by_number[number]
        assert orphan.state == optuna.trial.TrialState.FAIL and orphan.user_attrs.get("orphaned") is True, \
            orphan.user_attrs
        assert orphan.user_attrs.get("status") is None          # not counted as scored
        assert params_key(orphan) in scored_params, orphan.params


def _wait_for_trial_in_flight(process, storage, study, log, *, finished: int, timeout_s: float = 240.0):
    """Poll the storage until `finished` trials are done and another is being evaluated."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the run ended before it was killed:\n{log.read_text()}"
        try:
            trials = trials_of(storage, study)
        except Exception:                       # the study (or the database file) is not there yet
            trials = []
        running = [t.number for t in trials if t.state == RUNNING and t.params]
        if sum(t.state.is_finished() for t in trials) >= finished and running:
            return running
        time.sleep(0.2)
    raise AssertionError(f"no trial in flight after {timeout_s} s:\n{log.read_text()}")


def test_cli_end_to_end_on_the_model_backend(tmp_path):
    storage, study = f"sqlite:///{tmp_path}/s.db", "e2e"
    done = subprocess.run(tune_command(storage, study, 3, "--json"), cwd=ROOT, env=environment(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert summary["predicted"] is True and summary["backend"] == "model" and summary["gpu"] == TARGET
    assert summary["shape"] == SHAPE and summary["study"] == study
    assert summary["run"] == 3 and summary["scored"] == sum(summary["categories"].values())
    assert summary["categories"].get(status.OK, 0) >= 1
    assert summary["best"] == summary["top"][0] and summary["best"]["value_ms"] > 0
    # every scored value is the model's prediction for the target, and the trial says so
    ok = [t for t in scored(trials_of(storage, study)) if t.user_attrs["status"] == status.OK]
    assert ok and all(t.user_attrs["predicted"] is True and t.user_attrs["target"] == TARGET
                      and t.value == t.user_attrs["predicted_ms"] for t in ok)

    # the same study again, as a table: its budget is spent, so nothing runs; times say PREDICTED
    count = len(trials_of(storage, study))
    table = subprocess.run(tune_command(storage, study, 3), cwd=ROOT, env=environment(),
                           capture_output=True, text=True, timeout=300)
    assert table.returncode == 0, table.stdout + table.stderr
    assert "PREDICTED" in table.stdout and "predicted ms" in table.stdout, table.stdout
    assert f"study {study} (model backend, {TARGET}): {summary['scored']} trials scored (3 run, " in table.stdout
    assert len(trials_of(storage, study)) == count


def test_unknown_sampler_is_a_clear_error(tmp_path):
    with pytest.raises(SamplerError, match=r"unknown sampler 'annealing'; known: tpe, random, grid"):
        Tuner(options(tmp_path, shape=SHAPE, sampler="annealing"))


# The grid sampler asks Optuna's study.stop() when its grid is used up, which raises outside
# study.optimize(); a slot thread dying of it must fail the test, not just print a traceback.
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_grid_sampler_scores_every_point_then_stops(tmp_path):
    space = tmp_path / "grid.yaml"
    space.write_text(GRID_SPACE)
    tuner = Tuner(options(tmp_path, space=str(space), shape=SMALL_BUCKET, trials=5, sampler="grid"))
    summary = tuner.run()
    trials = tuner.study.get_trials(deepcopy=False)
    assert sorted(t.params["MATMUL"] for t in scored(trials)) == ["dot_ieee", "fma"]
    assert summary["scored"] == 2 and summary["categories"] == {status.OK: 2}
    assert all(t.state.is_finished() for t in trials)
    assert_no_repeats(trials)


def test_a_starting_point_added_later_is_tried_when_the_study_resumes(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(SMALL_SPACE)
    # bookkeeping only: replayed from a model-timed grid, no interpreter
    opts = options(tmp_path, space=str(space), shape=SMALL_BUCKET, trials=1, sampler="random",
                   backend="replay", grid=replay_grid(tmp_path, space), prune=False)
    Tuner(opts).run()                                     # the default config, enqueued first
    space.write_text(SMALL_SPACE + "enqueue:\n  - {BLOCK_K: 4, PREFETCH: 2, MATMUL: dot_ieee}\n")
    tuner = Tuner(replace(opts, trials=2))
    tuner.run()
    trials = scored(tuner.study.get_trials(deepcopy=False))
    assert [t.params for t in trials][1] == {"BLOCK_K": 4, "PREFETCH": 2, "MATMUL": "dot_ieee"}
    tuner = Tuner(replace(opts, trials=3))                # resumed again: nothing enqueued twice
    tuner.run()
    trials = tuner.study.get_trials(deepcopy=False)
    assert len(scored(trials)) == 3
    assert_no_repeats(trials)


def test_a_study_name_is_bound_to_what_it_tunes(tmp_path):
    opts = options(tmp_path, shape=SHAPE, study="shared-name")
    Tuner(opts)                                   # records what the study tunes
    Tuner(opts)                                   # the same again: resumes, no complaint
    with pytest.raises(TuneError) as raised:
        Tuner(replace(opts, shape="paper-7b"))
    message = str(raised.value)
    assert "'shared-name'" in message and "pick another --study name" in message
    assert "'shape': 'tiny'" in message and "'shape': 'paper-7b'" in message


def test_races_between_workers_are_settled_by_trial_number(tmp_path):
    """Two workers on one study, their steps replayed in one process: whoever asked first keeps a
    candidate both drew, and the last trial of the budget. (The PostgreSQL test runs them for real,
    where these interleavings happen only now and then.)"""
    space = small_space(tmp_path)[1]
    tuner = Tuner(options(tmp_path, space=space, shape=SMALL_BUCKET, trials=2, sampler="random"))
    default = {k: v for k, v in tuner.space.defaults.items() if k in tuner.distributions}
    other = {**default, "BLOCK_K": 8}
    tuner.study.enqueue_trial(default)            # the same candidate drawn by a second worker
    for params in (other, {**default, "BLOCK_K": 4}):
        tuner.study.enqueue_trial(params)

    first, second = tuner._ask(), tuner._ask()   # the starting point (the default) and its copy
    assert first.params == second.params == default
    assert tuner._screen(second) is UNDECIDED    # an earlier trial is on it: wait for its outcome
    assert tuner._screen(first) is not None      # the earliest scores it
    tuner._tell(first, 1.0, status.OK, first.params)
    assert tuner._screen(second, wait=True) is None
    dup = tuner.study.get_trials()[second.number]
    assert dup.user_attrs["status"] == "duplicate" and dup.user_attrs["duplicate_of"] == first.number
    assert dup.value == 1.0

    # one scored, budget 2: both workers pass their budget check at once and ask
    mine = tuner._ask()
    with quiet():
        theirs = tuner.study.ask(tuner.distributions)
    theirs.set_user_attr("owner", {"host": "elsewhere", "pid": 1})
    assert tuner._screen(theirs) is None          # asked second: over budget, not run
    assert tuner._screen(mine) is not None
    late = tuner.study.get_trials()[theirs.number]
    assert late.state == optuna.trial.TrialState.FAIL and late.user_attrs.get("status") is None
    assert "budget" in late.user_attrs["message"]
    waiting = tuner.study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [late.params]   # back in line


def test_rejected_configs_are_told_with_a_penalty_and_do_not_spend_the_budget(tmp_path):
    """Samplers ignore FAIL trials; a rejected config must carry a (bad) value to steer TPE away.
    It costs no compile and no GPU time, so it does not count towards --trials."""
    from m2tune.tuning.tune import INVALID_PENALTY_MS
    storage = f"sqlite:///{tmp_path}/s.db"
    # the forward's default (fma products) cannot hold a 64-wide tile: the first trial is rejected
    tuner = Tuner(TuneOptions(shape="k128-v64-b4-n8-s4096", backend="model", target="nvidia-h200",
                              trials=1, storage=storage, sampler="random"))
    result = tuner.run()
    finished = sorted((t for t in tuner.study.get_trials() if t.state.is_finished()), key=lambda t: t.number)
    first = finished[0]
    assert first.user_attrs["status"] == "invalid-config" and "registers" in first.user_attrs["message"]
    assert first.state == optuna.trial.TrialState.COMPLETE and first.value == INVALID_PENALTY_MS
    # ... and the study went on until one candidate ran
    assert result["run"] == 1 and result["categories"]["invalid-config"] == len(finished) - 1 >= 1
    assert finished[-1].user_attrs["status"] not in FREE


def test_confirm_prefers_less_memory_only_inside_the_noise():
    from m2tune.tuning.confirm import TIE, pick_winner
    memory = {"a": 300, "b": 100, "c": 50}
    entries = [{"config": "a", "median_ms": 10.0}, {"config": "b", "median_ms": 10.0 * (1 + TIE / 2)},
               {"config": "c", "median_ms": 10.0 * (1 + 2 * TIE)}, {"config": "d", "median_ms": None}]
    assert pick_winner(entries)["config"] == "a"                        # no memory known: the fastest
    with_memory = [{**e, "extra_bytes": memory.get(e["config"])} for e in entries]
    assert pick_winner(with_memory)["config"] == "b"                    # tied in time, a third of the memory
    assert pick_winner(with_memory[2:])["config"] == "c"
    assert pick_winner(with_memory[3:]) is None


WIDE_SPACE = """\
variant: m2rnn_fwd
params:
  BLOCK_K: {choices: [16, 32, 64, 128]}
  BLOCK_B: {choices: [1, 2, 4]}
  PREFETCH: {low: 0, high: 2}
buckets:
  - {name: wide, B: 4, S: 64, K: 128, V: 64, N: 2, shared_qk: true, dtype: float32}
"""


def test_a_space_that_does_not_fit_the_problem_stops_and_says_why(tmp_path):
    """fma products with 1 warp never hold a 64-wide tile: every candidate is rejected before
    running, none spends --trials, and the study ends at the cap on free answers with the reason."""
    from m2tune.tuning.repair import FAILURES_LIMIT
    from m2tune.tuning.summary import table
    from m2tune.tuning.tune import FREE_PER_TRIAL
    space = tmp_path / "wide.yaml"
    space.write_text(WIDE_SPACE)
    tuner = Tuner(options(tmp_path, space=str(space), shape="wide", trials=1, sampler="random"))
    result = tuner.run()
    assert result["run"] == 0 and result["categories"] == {status.INVALID_CONFIG: FREE_PER_TRIAL}
    # nothing to repair them into either: a few searches say so, then the process stops searching
    notes = [t.user_attrs["repair"] for t in tuner.study.get_trials(deepcopy=False)]
    assert notes[:FAILURES_LIMIT] == ["no feasible candidate found near it or at random"] * FAILURES_LIMIT
    assert all(n.startswith("not tried") for n in notes[FAILURES_LIMIT:]) and len(notes) == FREE_PER_TRIAL
    assert "rejected or pruned before running" in result["stop_reason"]
    assert result["stop_reason"] in "\n".join(table(result))


def test_all_buckets_one_study_each_and_a_time_budget(tmp_path, monkeypatch):
    """--all-buckets runs every bucket of the space in its own study; --budget-s stops asking for
    trials when it is spent (the summary says so; a later run resumes each study)."""
    import optuna
    from click.testing import CliRunner

    from m2tune.cli import main
    space = tmp_path / "two.yaml"
    space.write_text(GRID_SPACE + "  - {name: other, B: 1, S: 16, K: 16, V: 16, N: 2, shared_qk: true, dtype: float32}\n")
    storage = f"sqlite:///{tmp_path}/s.db"
    result = CliRunner().invoke(main, ["tune", "--all-buckets", "--budget-s", "0.001", "--trials", "5",
                                       "--backend", "model", "--gpu", TARGET, "--space", str(space),
                                       "--storage", storage, "--sampler", "grid"])
    assert result.exit_code == 0, result.output
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert names == sorted(f"m2rnn_fwd/{b}/{TARGET}/model" for b in (SMALL_BUCKET, "other")), names
    assert result.output.count("stopped at the time budget (0.001 s)") == 2, result.output
    # a run stopped from outside keeps the tables of the studies that ended before the stop
    from m2tune.cli import tune as cli_tune
    real, calls = cli_tune._tune_one, []

    def stopped_in_the_second(opts, as_json, slots=None):
        calls.append(opts.shape)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(opts, as_json, slots)
    monkeypatch.setattr(cli_tune, "_tune_one", stopped_in_the_second)
    cut = CliRunner().invoke(main, ["tune", "--all-buckets", "--trials", "5", "--backend", "model",
                                    "--gpu", TARGET, "--space", str(space), "--storage", storage])
    assert len(calls) == 2 and f"m2rnn_fwd/{calls[0]}/{TARGET}/model" in cut.output, cut.output
    bad = CliRunner().invoke(main, ["tune", "--all-buckets", "--shape", "tiny", "--space", str(space),
                                    "--backend", "model", "--gpu", TARGET, "--storage", storage])
    assert bad.exit_code == 2 and "Error:" in bad.output and "--all-buckets" in bad.output, bad.output


def test_studies_sharing_slots_start_their_worker_once(tmp_path, monkeypatch):
    """--all-buckets hands one Slots to every study: one worker process for all of them (each
    start imports torch and Triton), closed when the run ends."""
    from m2tune.tuning import slots as slots_module
    from m2tune.tuning.slots import Slots
    made = []

    class Counted(slots_module.ModelEvaluator):
        def __init__(self, *args, **kw):
            made.append(self)
            super().__init__(*args, **kw)
    monkeypatch.setattr(slots_module, "ModelEvaluator", Counted)
    space = tmp_path / "two.yaml"
    space.write_text(GRID_SPACE + "  - {name: other, B: 1, S: 16, K: 16, V: 16, N: 2, shared_qk: true, dtype: float32}\n")
    with Slots() as slots:
        for bucket in (SMALL_BUCKET, "other"):
            result = Tuner(options(tmp_path, space=str(space), shape=bucket, trials=2, sampler="grid")).run(slots)
            assert result["run"] == 2, result
        (evaluator,) = made
        assert evaluator.worker.starts == 1 and evaluator.worker.pid is not None
    assert evaluator.worker.pid is None                      # closed with the Slots
