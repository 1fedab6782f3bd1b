"""Outcome of one candidate (trial record `status`), how exceptions map to it, and the filters
every reader of a study applies (tune, confirm, summary, export, report).

Reading a trial here needs only its `state.name`, `user_attrs` and `value`: no optuna import.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

OK = "ok"
INVALID_CONFIG = "invalid-config"        # rejected by the variant's check() before compiling
COMPILE_ERROR = "compile-error"
OUT_OF_RESOURCES = "out-of-resources"     # shared memory / registers beyond the GPU's limits
LAUNCH_ERROR = "launch-error"
WRONG_RESULT = "wrong-result"
TIMEOUT = "timeout"
CRASHED = "crashed"

ALL = (OK, INVALID_CONFIG, COMPILE_ERROR, OUT_OF_RESOURCES, LAUNCH_ERROR, WRONG_RESULT, TIMEOUT, CRASHED)

# Categories of the tuner's own bookkeeping, beside the candidate outcomes above.
PRUNED = "pruned-by-model"     # the model predicted it far slower than the best so far (not run)
DUPLICATE = "duplicate"        # the same parameters were scored by another trial: its outcome copied
UNSCORED = "unscored"          # finished without a category: orphaned, or over the shared budget
NOT_RECORDED = "not-recorded"  # replay backend: the recorded grid holds no measurement of it
# Answered without running (no compile, no GPU time): they do not spend a study's --trials.
FREE = (INVALID_CONFIG, PRUNED, NOT_RECORDED)


def classify(exc: BaseException) -> str:
    """Name the failure category of an exception raised while compiling or launching."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "OutOfResources" in names:
        return OUT_OF_RESOURCES
    if names & {"CompilationError", "CompileTimeAssertionFailure", "PTXASError", "MLIRError"}:
        return COMPILE_ERROR
    text = str(exc)
    if "out of resource" in text.lower():
        return OUT_OF_RESOURCES
    if "PassManager::run failed" in text:     # Triton's MLIR lowering gave up: a compile error
        return COMPILE_ERROR
    return LAUNCH_ERROR


# ---- filters over a study's trials (optuna FrozenTrial or anything with state, user_attrs, value)

def category(trial: Any) -> Optional[str]:
    return trial.user_attrs.get("status")


def scored(trial: Any) -> bool:
    """Answered for its candidate: finished with a category other than duplicate."""
    return trial.state.is_finished() and category(trial) not in (None, DUPLICATE)


def spends_budget(trial: Any) -> bool:
    """Spends --trials: scored, and not answered before running (FREE)."""
    return scored(trial) and category(trial) not in FREE


def is_ok(trial: Any) -> bool:
    """Validated and timed (or scored by the model): the only trials that may win."""
    return trial.state.name == "COMPLETE" and category(trial) == OK and trial.value is not None


# ---- timing noise

def spread(median_ms: Optional[float], p20_ms: Optional[float], p80_ms: Optional[float]) -> Optional[float]:
    """(p80 - p20) / median: the relative noise of a timing; None when a part is missing or zero."""
    if not median_ms or p20_ms is None or p80_ms is None:
        return None
    return (p80_ms - p20_ms) / median_ms


def spread_of(attrs: Mapping[str, Any]) -> Optional[float]:
    """The spread of a trial's (or a confirm entry's) recorded median_ms / p20_ms / p80_ms."""
    return spread(attrs.get("median_ms"), attrs.get("p20_ms"), attrs.get("p80_ms"))


def max_error(errors: Optional[Mapping[str, Any]]) -> Optional[float]:
    """The largest error vs float64 of a trial's recorded `errors` (output -> {"error": ...})."""
    values = [e.get("error") for e in (errors or {}).values() if isinstance(e, dict) and e.get("error") is not None]
    return max(values) if values else None
