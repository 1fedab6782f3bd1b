"""Tuning studies as data: one pandas row per finished trial, and what every figure needs.

pandas is imported here and in the other report modules only: `import m2tune`, the op and the
layer never load them (training code must not need pandas or plotly).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import pandas as pd

from .. import status
from ..model.hardware import HardwareProfile
from ..problem import KernelConfig, Problem
from ..status import UNSCORED


CATEGORICAL_MAX = 16                # a numeric parameter with more distinct values is drawn as a scatter
_HEAD = ("number", "state", "status", "value_ms", "p20_ms", "p80_ms")
_TAIL = ("us_per_step", "predicted_ms", "bound", "n_regs", "n_spills", "shared", "sm_clock_mhz",
         "temperature_c", "max_error", "duplicate_of", "message", "config", "changed", "inference_only")
_FLOATS = ("value_ms", "p20_ms", "p80_ms", "us_per_step", "predicted_ms", "sm_clock_mhz",
           "temperature_c", "max_error")
_INTS = ("n_regs", "n_spills", "shared", "duplicate_of")


class ReportError(ValueError):
    pass


# ---------------------------------------------------------------------------------------------
# A study's data.

@dataclass
class StudyData:
    """What every figure of one study reads."""
    name: str
    attrs: dict[str, Any]                # the study's user attributes (identity, confirm, ...)
    identity: dict[str, Any]             # variant, shape, backend, problem, gpu (tune.py); {} if foreign
    problem: Optional[Problem]
    hw: Optional[HardwareProfile]        # the study GPU's hardware profile, when one is bundled
    frame: pd.DataFrame                  # trials_frame
    params: dict[str, list[Any]]         # searched parameter -> its values in the space's order
    notes: list[str] = field(default_factory=list)   # what could not be resolved, and why
    default: dict[str, Any] = field(default_factory=dict)   # the template's default config ({} if unknown)

    @property
    def predicted(self) -> bool:
        """A model-backend study: its times are the performance model's, never measured."""
        return self.identity.get("backend") == "model"

    @property
    def ok(self) -> pd.DataFrame:
        return self.frame[self.frame["status"] == status.OK]

    @property
    def winner(self) -> Optional[int]:
        """The trial the confirm stage picked, else the fastest validated one (None: no validated trial)."""
        trial = ((self.attrs.get("confirm") or {}).get("winner") or {}).get("trial")
        if trial is not None and trial in set(self.ok["number"]):
            return int(trial)
        ok = self.ok
        return int(ok.loc[ok["value_ms"].idxmin(), "number"]) if len(ok) else None

    def title(self, text: str) -> str:
        return f"PREDICTED · {text}" if self.predicted else text

    @property
    def time_word(self) -> str:
        return "predicted" if self.predicted else "measured"


def study_problem(study: Any, notes: Optional[list[str]] = None) -> Optional[Problem]:
    """The Problem a study tunes: its shape name as a bucket of its search space, else a named shape."""
    from ..problem import shape as named_shape
    from ..tuning.space import problem_for
    from ..tuning.space_file import load_space
    identity = study.user_attrs.get("identity") or {}
    name, variant = identity.get("shape"), identity.get("variant")
    if not name:
        _note(notes, "the study has no m2tune identity: no problem shape, so no per-step times or model")
        return None
    recorded = study.user_attrs.get("space")
    # the space file the study was made from when it is still there (it may hold extra buckets),
    # else the bundled one of the variant
    source = recorded if recorded and Path(recorded).is_file() else variant
    try:
        return problem_for(load_space(source), name)
    except (OSError, KeyError, ValueError) as exc:
        try:
            return named_shape(name)
        except KeyError:
            _note(notes, f"shape {name!r} is neither a bucket of {source!r} nor a named shape ({exc})")
            return None


def study_hardware(study: Any, notes: Optional[list[str]] = None) -> Optional[HardwareProfile]:
    """The bundled hardware profile of the study's GPU, or None (the model figures are then skipped)."""
    from ..model.hardware import HardwareProfileError, find
    from ..resources import data_dir
    slug = (study.user_attrs.get("identity") or {}).get("gpu")
    if not slug:
        return None
    try:
        return find(slug, [data_dir("profiles")])
    except HardwareProfileError as exc:
        _note(notes, f"no hardware profile for {slug}: {exc}")
        return None


def _note(notes: Optional[list[str]], text: str) -> None:
    if notes is not None:
        notes.append(text)


def _searched(trials: Sequence[Any]) -> dict[str, list[Any]]:
    """Searched parameter -> its values in the order of the space (categorical choices, int ranges)."""
    out: dict[str, list[Any]] = {}
    for t in trials:
        for name, dist in t.distributions.items():
            if name in out:
                continue
            if hasattr(dist, "choices"):
                out[name] = list(dist.choices)
            elif hasattr(dist, "step") and isinstance(dist.low, int) and dist.step and not getattr(dist, "log", False):
                values = list(range(dist.low, dist.high + 1, dist.step))
                out[name] = values if len(values) <= CATEGORICAL_MAX else []
            else:
                out[name] = []          # continuous, or too many values to list: ordered as observed
    return out


def default_config(variant: Optional[str]) -> dict[str, Any]:
    """The template's default config (its parameters' first values), {} for an unknown variant."""
    from .. import variants
    try:
        return variants.spec(variant).DEFAULT.as_dict() if variant else {}
    except variants.UnknownVariant:
        return {}


def changed_text(config: dict[str, Any], default: dict[str, Any]) -> str:
    """A config named by what it changes from the default: every trial shares most parameters."""
    if not default:
        return " ".join(f"{k}={v}" for k, v in sorted(config.items()))
    return " ".join(f"{k}={v}" for k, v in sorted(config.items()) if default.get(k) != v) or "default"


def inference_only(variant: Optional[str], config: dict[str, Any]) -> bool:
    """The spec refuses the config for training (a forward whose products round the state)."""
    from .. import variants
    try:
        spec = variants.spec(variant) if variant else None
    except variants.UnknownVariant:
        return False
    return bool(spec and spec.training_reason(KernelConfig.of(variant, config)))


def _row(trial: Any, params: Iterable[str], steps: Optional[int], variant: Optional[str],
         default: dict[str, Any]) -> dict[str, Any]:
    a = trial.user_attrs
    category = a.get("status") or UNSCORED
    # rejected configs carry a 1e9 ms penalty and duplicates a copy of another trial's time:
    # only a trial that itself validated and was timed has a time
    value = float(trial.value) if category == status.OK and trial.value is not None else None
    resources, gpu = a.get("resources") or {}, a.get("gpu") or {}
    config = a.get("config") or dict(trial.params)
    row = {"number": trial.number, "state": trial.state.name, "status": category, "value_ms": value,
           "p20_ms": a.get("p20_ms"), "p80_ms": a.get("p80_ms")}
    row.update({p: trial.params.get(p) for p in params})
    row.update({
        "us_per_step": value * 1e3 / steps if value is not None and steps else None,
        "predicted_ms": a.get("predicted_ms"), "bound": a.get("bound"),
        "n_regs": resources.get("n_regs"), "n_spills": resources.get("n_spills"),
        "shared": resources.get("shared"),
        "sm_clock_mhz": gpu.get("sm_clock_mhz"), "temperature_c": gpu.get("temperature_c"),
        "max_error": status.max_error(a.get("errors")), "duplicate_of": a.get("duplicate_of"),
        "message": a.get("message"),
        # the full config (unsearched parameters at their defaults) is what the model scores
        "config": config,
        "changed": changed_text(config, default),
        "inference_only": inference_only(variant, config) if config else False,
    })
    return row


def trials_frame(study: Any, problem: Optional[Problem] = None) -> pd.DataFrame:
    """One row per finished trial, by trial number.

    Columns: number, state (Optuna's), status (the trial's category; "unscored" when it has none),
    value_ms (NaN unless status is ok), p20_ms, p80_ms, the searched parameters, us_per_step
    (value_ms·1e3/S), predicted_ms, bound, n_regs, n_spills, shared, sm_clock_mhz, temperature_c,
    max_error (vs float64), duplicate_of, message, config (dict), changed (the config named by the
    parameters it changes from the template's default), inference_only (the spec refuses it for
    training: its products round the state). `problem` defaults to the study's.
    """
    if problem is None:
        problem = study_problem(study)
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    params = _searched(trials)
    columns = [*_HEAD, *params, *_TAIL]
    clash = set(params) & set(_HEAD + _TAIL)
    if clash:
        raise ReportError(f"study {study.study_name!r}: searched parameters {sorted(clash)} clash with report columns")
    variant = (study.user_attrs.get("identity") or {}).get("variant")
    default = default_config(variant)
    frame = pd.DataFrame([_row(t, params, problem.S if problem else None, variant, default) for t in trials],
                         columns=columns)
    for col in _FLOATS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    for col in _INTS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    return frame.sort_values("number", kind="stable").reset_index(drop=True)


def load_study_data(study: Any) -> StudyData:
    notes: list[str] = []
    problem = study_problem(study, notes)
    hw = study_hardware(study, notes)
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    identity = dict(study.user_attrs.get("identity") or {})
    return StudyData(study.study_name, dict(study.user_attrs), identity, problem, hw, trials_frame(study, problem),
                     _searched(trials), notes, default_config(identity.get("variant")))


def config_text(row: Any, params: Iterable[str]) -> str:
    return " ".join(f"{p}={row[p]}" for p in params)


def is_missing(value: Any) -> bool:
    return value is None or bool(pd.isna(value))
