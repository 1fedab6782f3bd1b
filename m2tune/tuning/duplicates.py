"""Who scores a candidate when several trials (of any process or host) propose the same one.

Decided from the storage, so it holds across processes and hosts: the lowest-numbered trial with
those parameters that is not itself a duplicate. A later trial waits for it, then records a
duplicate of its outcome; a candidate is never run twice.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..status import scored

UNDECIDED = object()     # an earlier trial may still score this candidate


def key(params: Mapping[str, Any]) -> tuple:
    """What identifies a candidate among a study's trials (here and in repair.py)."""
    return tuple(sorted(params.items()))


def decided_by(trial, trials: list):
    """The scored trial whose outcome is this trial's (a duplicate of it), UNDECIDED while an
    earlier trial may still score the same candidate, or None: this trial scores it."""
    import optuna
    mine = key(trial.params)
    same = [t for t in trials if scored(t) and key(t.params) == mine]
    if same:
        return min(same, key=lambda t: t.number)
    for t in trials:
        if (t.state == optuna.trial.TrialState.RUNNING and t.number < trial.number
                and ("owner" not in t.user_attrs or key(t.params) == mine)):
            return UNDECIDED
    return None
