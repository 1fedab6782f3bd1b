"""Trials whose process died: found and failed, so their candidates run again.

A killed tuner leaves its trials RUNNING. This host's dead processes are found by the owner each
trial records (host, pid); a trial with no owner yet (its process died inside study.ask) counts
once it has been ownerless longer than the heartbeat grace period; other hosts' dead processes by
their stale heartbeat (storage.py). A failed orphan's parameters are enqueued again; completed
trials are in the storage already and never run again.
"""
from __future__ import annotations

import os
import socket
import time
from typing import Any

from .storage import GRACE_S, HEARTBEAT_S, quiet


class Reaper:
    """Fails a study's orphaned trials; `due()` says when the next look is due."""

    def __init__(self, study: Any, storage: Any) -> None:
        self.study, self.storage = study, storage
        self._ownerless: dict[int, float] = {}      # trial id -> when first seen RUNNING without an owner
        self._last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self._last > HEARTBEAT_S

    def reap(self) -> None:
        """Fail the trials whose process is gone, so their candidates run again: this host's dead
        processes (and trials never given an owner), then other hosts' by their stale heartbeat."""
        from optuna.storages import fail_stale_trials
        self._last = time.monotonic()
        self._fail_orphans()
        with quiet():
            fail_stale_trials(self.study)       # re-enqueued by the storage's retry callback

    def _fail_orphans(self) -> None:
        """Trials RUNNING in a process of this host that no longer exists: fail them, retry their params.

        A trial is also an orphan when it has had no owner for longer than the heartbeat grace period:
        its process died inside study.ask, before it could record one (or a heartbeat).
        """
        import optuna
        host, now = socket.gethostname(), time.monotonic()
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            owner = t.user_attrs.get("owner")
            if owner is None:
                if now - self._ownerless.setdefault(t._trial_id, now) < GRACE_S:
                    continue
            elif owner.get("host") != host or alive(owner.get("pid", -1)):
                continue
            try:
                # attributes before the state: a finished trial's attributes cannot change. A status
                # recorded just before the kill came without its value: the candidate is not scored.
                self.storage.set_trial_user_attr(t._trial_id, "orphaned", True)
                if t.user_attrs.get("status") is not None:
                    self.storage.set_trial_user_attr(t._trial_id, "status", None)
                self.storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue                    # another resuming process got there first
            self.study.enqueue_trial(t.params, skip_if_exists=False)


def alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:             # exists, another user's
        return True
    return True
