"""Two `m2tune tune` processes on one study in a real PostgreSQL server (started by the
postgres_server fixture in conftest.py, on loopback): together they score exactly the trials
asked for, no candidate twice, and leave nothing running.

This is how several hosts share a study; here both processes run on this machine, with the
model backend, so no GPU is needed.
"""
from __future__ import annotations

import json
import subprocess

import optuna

from tests.tuning import (ROOT, SMALL_BUCKET, assert_no_repeats, environment, scored, small_space, trials_of,
                          tune_command)

WANTED = 8


def test_two_processes_share_one_study(postgres_url, tmp_path):
    command = tune_command(postgres_url, "shared", WANTED, "--json", *small_space(tmp_path), shape=SMALL_BUCKET)
    logs = [tmp_path / f"run{i}.log" for i in range(2)]
    processes = []
    for log in logs:
        with open(log, "w") as err:
            processes.append(subprocess.Popen(command, cwd=ROOT, env=environment(), stdout=subprocess.PIPE,
                                              stderr=err, text=True))
    outputs = []
    try:
        for p in processes:
            outputs.append(p.communicate(timeout=420)[0])
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for p, out, log in zip(processes, outputs, logs):
        assert p.returncode == 0, out + log.read_text()
        assert json.loads(out)["study"] == "shared"

    trials = trials_of(postgres_url, "shared")
    assert not [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    done = scored(trials)
    assert len(done) == WANTED, [(t.number, t.state.name, t.user_attrs.get("status")) for t in trials]
    assert_no_repeats(trials)
    # both processes did part of the work (each trial records the process that ran it)
    owners = {t.user_attrs["owner"]["pid"] for t in done}
    assert owners == {p.pid for p in processes}, owners
