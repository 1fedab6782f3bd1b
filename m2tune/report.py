"""`m2tune report`: tuning studies as dashboards in one self-contained HTML file.

Optuna storage -> pandas (one row per finished trial, `trials_frame`) -> plotly figures -> HTML.
Per study, after a short table (best config, its time, the default config's time from the confirm
stage):

1. history: every validated trial's time by trial number, the best so far, the rest at the bottom
   coloured by category;
2. parameter effects: time by value of each searched parameter (which choices matter);
3. model vs measurement: the performance model's prediction for each validated trial (with the
   registers and shared memory its compiled kernel recorded) against its measured time, with the
   rank correlation that says how far its pruning and ranking can be trusted;
4. step roofline: the best configs' time per step next to the model's latency, throughput and
   memory bounds per step, the binding one named (which bound limits it, and how far from it);
5. failures by category, with the commonest reasons.

Each figure is split as Optuna's visualization module does it: `_get_<name>_info` returns plain data
(lists, dicts) that tests check, `_get_<name>_plot` turns it into a plotly Figure. A study of the
model backend holds predictions, not measurements: everything drawn from one says PREDICTED.

pandas and plotly are imported here and nowhere else in m2tune: `import m2tune`, the op and the layer
never load this module (training code must not need either).
"""
from __future__ import annotations

import html
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import perfmodel, status
from .fitting import median_ape, spearman
from .hardware import HardwareProfile
from .problem import KernelConfig, Problem

DUPLICATE = "duplicate"             # m2tune.tune.DUPLICATE, repeated: tune loads the worker and backends
UNSCORED = "unscored"               # finished without a category: orphaned, or over the shared budget
ROOFLINE_TOP = 10                   # configs in the step roofline
CATEGORICAL_MAX = 16                # a numeric parameter with more distinct values is drawn as a scatter
FIGURE_HEIGHT = 430
TERMS = ("latency", "throughput", "memory", "compute")   # perfmodel.Prediction.bound values

# fixed columns of trials_frame; the searched parameters come after `value_ms`
_HEAD = ("number", "state", "status", "value_ms", "p20_ms", "p80_ms")
_TAIL = ("us_per_step", "predicted_ms", "bound", "n_regs", "n_spills", "shared", "sm_clock_mhz",
         "temperature_c", "max_error", "duplicate_of", "message", "config")
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

    @property
    def predicted(self) -> bool:
        """A model-backend study: its times are the performance model's, never measured."""
        return self.identity.get("backend") == "model"

    @property
    def ok(self) -> pd.DataFrame:
        return self.frame[self.frame["status"] == status.OK]

    def title(self, text: str) -> str:
        return f"PREDICTED · {text}" if self.predicted else text

    @property
    def time_word(self) -> str:
        return "predicted" if self.predicted else "measured"


def study_problem(study: Any, notes: Optional[list[str]] = None) -> Optional[Problem]:
    """The Problem a study tunes: its shape name as a bucket of its search space, else a named shape."""
    from .problem import shape as named_shape
    from .space import load_space
    from .tune import problem_for
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
    from .hardware import HardwareProfileError, find
    from .resources import data_dir
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


def _max_error(errors: dict) -> Optional[float]:
    values = [e.get("error") for e in errors.values() if isinstance(e, dict) and e.get("error") is not None]
    return max(values) if values else None


def _row(trial: Any, params: Iterable[str], steps: Optional[int]) -> dict[str, Any]:
    a = trial.user_attrs
    category = a.get("status") or UNSCORED
    # rejected configs carry a 1e9 ms penalty and duplicates a copy of another trial's time:
    # only a trial that itself validated and was timed has a time
    value = float(trial.value) if category == status.OK and trial.value is not None else None
    resources, gpu = a.get("resources") or {}, a.get("gpu") or {}
    row = {"number": trial.number, "state": trial.state.name, "status": category, "value_ms": value,
           "p20_ms": a.get("p20_ms"), "p80_ms": a.get("p80_ms")}
    row.update({p: trial.params.get(p) for p in params})
    row.update({
        "us_per_step": value * 1e3 / steps if value is not None and steps else None,
        "predicted_ms": a.get("predicted_ms"), "bound": a.get("bound"),
        "n_regs": resources.get("n_regs"), "n_spills": resources.get("n_spills"),
        "shared": resources.get("shared"),
        "sm_clock_mhz": gpu.get("sm_clock_mhz"), "temperature_c": gpu.get("temperature_c"),
        "max_error": _max_error(a.get("errors") or {}), "duplicate_of": a.get("duplicate_of"),
        "message": a.get("message"),
        # the full config (unsearched parameters at their defaults) is what the model scores
        "config": a.get("config") or dict(trial.params),
    })
    return row


def trials_frame(study: Any, problem: Optional[Problem] = None) -> pd.DataFrame:
    """One row per finished trial, by trial number.

    Columns: number, state (Optuna's), status (the trial's category; "unscored" when it has none),
    value_ms (NaN unless status is ok), p20_ms, p80_ms, the searched parameters, us_per_step
    (value_ms·1e3/S), predicted_ms, bound, n_regs, n_spills, shared, sm_clock_mhz, temperature_c,
    max_error (vs float64), duplicate_of, message, config (dict). `problem` defaults to the study's.
    """
    if problem is None:
        problem = study_problem(study)
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    params = _searched(trials)
    columns = [*_HEAD, *params, *_TAIL]
    clash = set(params) & set(_HEAD + _TAIL)
    if clash:
        raise ReportError(f"study {study.study_name!r}: searched parameters {sorted(clash)} clash with report columns")
    frame = pd.DataFrame([_row(t, params, problem.S if problem else None) for t in trials], columns=columns)
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
    return StudyData(study.study_name, dict(study.user_attrs), dict(study.user_attrs.get("identity") or {}),
                     problem, hw, trials_frame(study, problem), _searched(trials), notes)


def _config_text(row: Any, params: Iterable[str]) -> str:
    return " ".join(f"{p}={row[p]}" for p in params)


def _na(value: Any) -> bool:
    return value is None or bool(pd.isna(value))


# ---------------------------------------------------------------------------------------------
# 1. History.

@dataclass
class HistoryInfo:
    title: str
    y_label: str
    numbers: list[int]                   # validated trials, by number
    values_ms: list[float]
    hover: list[str]
    best_ms: list[float]                 # best so far at each of `numbers` (non-increasing)
    failures: dict[str, list[int]]       # category -> trial numbers (duplicates and unscored left out)
    failure_hover: dict[str, list[str]]


def _get_history_info(data: StudyData) -> HistoryInfo:
    ok = data.ok.sort_values("number")
    best = ok["value_ms"].cummin().tolist()
    f = data.frame
    failed = f[~f["status"].isin([status.OK, DUPLICATE, UNSCORED])]
    failures: dict[str, list[int]] = {}
    failure_hover: dict[str, list[str]] = {}
    for category, group in failed.groupby("status", sort=True):
        failures[str(category)] = group["number"].tolist()
        failure_hover[str(category)] = [f"#{r['number']} {category}<br>{_config_text(r, data.params)}"
                                        f"<br>{html.escape(str(r['message'] or ''))[:160]}"
                                        for _, r in group.iterrows()]
    scored = int((~f["status"].isin([DUPLICATE, UNSCORED])).sum())
    dups = int((f["status"] == DUPLICATE).sum())
    text = f"{data.name}: {len(f)} trials ({scored} scored, {dups} duplicates)"
    if len(ok):
        b = ok.loc[ok["value_ms"].idxmin()]
        per_step = f", {b['us_per_step']:.3f} µs/step" if not _na(b["us_per_step"]) else ""
        text += f", best {b['value_ms']:.4f} ms (trial {int(b['number'])}{per_step})"
    else:
        text += ", no validated trial"
    hover = [f"#{r['number']}: {r['value_ms']:.4f} ms<br>{_config_text(r, data.params)}" for _, r in ok.iterrows()]
    return HistoryInfo(data.title(text), f"{data.time_word} time (ms)", ok["number"].tolist(),
                       ok["value_ms"].tolist(), hover, best, failures, failure_hover)


def _get_history_plot(info: HistoryInfo) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=info.numbers, y=info.values_ms, mode="markers", name="validated",
                             hovertext=info.hover, hoverinfo="text", marker={"size": 7}))
    if info.numbers:
        fig.add_trace(go.Scatter(x=info.numbers, y=info.best_ms, mode="lines", name="best so far",
                                 line={"shape": "hv", "width": 2}, hoverinfo="skip"))
    # failures have no time: one row each under the lowest validated time, so the eye sees when
    # the sampler wandered into rejected corners
    floor = min(info.values_ms) if info.values_ms else 1.0
    for i, (category, numbers) in enumerate(info.failures.items()):
        y = floor / (1.25 * 1.12 ** i)
        fig.add_trace(go.Scatter(x=numbers, y=[y] * len(numbers), mode="markers", name=category,
                                 marker={"symbol": "x", "size": 7}, hovertext=info.failure_hover[category],
                                 hoverinfo="text"))
    fig.update_layout(title=info.title, height=FIGURE_HEIGHT, xaxis_title="trial number",
                      yaxis={"type": "log", "title": info.y_label}, legend={"orientation": "h", "y": -0.2})
    return fig


# ---------------------------------------------------------------------------------------------
# 2. Parameter effects.

@dataclass
class ParamPanel:
    name: str
    numeric: bool                        # many numeric values: a scatter on a value axis, not boxes
    trials: dict[str, list[int]]         # value label -> validated trial numbers (space order)
    times_ms: dict[str, list[float]]     # value label -> their times


@dataclass
class ParamEffectsInfo:
    title: str
    y_label: str
    panels: list[ParamPanel]


def _order_key(value: Any) -> tuple[int, Any]:
    # numbers by value (2 before 16), anything else after them by its text
    return (0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, str(value))


def _panel(name: str, order: list[Any], ok: pd.DataFrame) -> ParamPanel:
    present = ok[name].dropna().unique().tolist()
    values = [v for v in order if v in present] + sorted((v for v in present if v not in order), key=_order_key)
    numeric = not order and len(values) > CATEGORICAL_MAX
    if numeric:
        values = sorted(values)
    trials: dict[str, list[int]] = {}
    times: dict[str, list[float]] = {}
    for v in values:
        rows = ok[ok[name] == v]
        trials[str(v)] = rows["number"].tolist()
        times[str(v)] = rows["value_ms"].tolist()
    return ParamPanel(name, numeric, trials, times)


def _get_param_effects_info(data: StudyData) -> ParamEffectsInfo:
    ok = data.ok
    panels = [_panel(name, order, ok) for name, order in data.params.items()]
    text = f"time by parameter value ({len(ok)} validated trials)"
    return ParamEffectsInfo(data.title(text), f"{data.time_word} ms", panels)


def _get_param_effects_plot(info: ParamEffectsInfo) -> go.Figure:
    cols = min(3, max(1, len(info.panels)))
    rows = max(1, math.ceil(len(info.panels) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p.name for p in info.panels] or None,
                        horizontal_spacing=0.07, vertical_spacing=0.16)
    for i, panel in enumerate(info.panels):
        r, c = i // cols + 1, i % cols + 1
        xs = [label for label, ts in panel.times_ms.items() for _ in ts]
        ys = [t for ts in panel.times_ms.values() for t in ts]
        nums = [n for ns in panel.trials.values() for n in ns]
        hover = [f"#{n}: {panel.name}={x}, {y:.4f} ms" for n, x, y in zip(nums, xs, ys)]
        if panel.numeric:
            trace = go.Scatter(x=[float(x) for x in xs], y=ys, mode="markers", hovertext=hover,
                               hoverinfo="text", showlegend=False)
        else:
            trace = go.Box(x=xs, y=ys, boxpoints="all", jitter=0.4, pointpos=0, hovertext=hover,
                           hoverinfo="text", showlegend=False, marker={"size": 5})
        fig.add_trace(trace, row=r, col=c)
        if not panel.numeric:
            # labels like "16" would otherwise make a numeric axis and lose the space's order
            fig.update_xaxes(type="category", categoryorder="array", categoryarray=list(panel.times_ms),
                             row=r, col=c)
        fig.update_yaxes(type="log", row=r, col=c, title_text=info.y_label if c == 1 else None)
    fig.update_layout(title=info.title, height=max(FIGURE_HEIGHT, 330 * rows + 100))
    return fig


# ---------------------------------------------------------------------------------------------
# 3. Model vs measurement.

def _prediction(data: StudyData, row: Any) -> Optional[perfmodel.Prediction]:
    """The model's prediction for a trial, with the compiled kernel's registers and shared memory
    when recorded (the occupancy they set is the model's largest source of error otherwise)."""
    if data.problem is None or data.hw is None or not data.identity.get("variant"):
        return None
    resources = None
    if not _na(row["n_regs"]):
        resources = {"n_regs": int(row["n_regs"]), "shared": 0 if _na(row["shared"]) else int(row["shared"])}
    config = KernelConfig.of(data.identity["variant"], row["config"])
    try:
        return perfmodel.predict(data.problem, config, data.hw, resources)
    except (perfmodel.ModelError, KeyError):      # no constants for the variant, not resident, ...
        return None


@dataclass
class ModelFitInfo:
    title: str
    note: Optional[str]                  # why nothing is drawn
    numbers: list[int] = field(default_factory=list)
    measured_ms: list[float] = field(default_factory=list)
    predicted_ms: list[float] = field(default_factory=list)
    bound: list[str] = field(default_factory=list)
    hover: list[str] = field(default_factory=list)
    spearman: Optional[float] = None
    median_ape: Optional[float] = None   # %


def _get_model_fit_info(data: StudyData) -> ModelFitInfo:
    base = "model vs measurement"
    ok = data.ok
    if data.predicted:
        return ModelFitInfo(data.title(base), "skipped: this study's times are the model's own predictions; "
                                              "there is no measurement to compare them with")
    if data.hw is None or data.problem is None:
        return ModelFitInfo(base, "skipped: no hardware profile for the study's GPU (or no problem shape)")
    if len(ok) < 3:
        return ModelFitInfo(base, f"skipped: {len(ok)} validated trials, the rank correlation needs 3")
    info = ModelFitInfo(base, None)
    for _, row in ok.iterrows():
        pred = _prediction(data, row)
        if pred is None:
            continue
        info.numbers.append(int(row["number"]))
        info.measured_ms.append(float(row["value_ms"]))
        info.predicted_ms.append(pred.time_ms)
        info.bound.append(pred.bound)
        info.hover.append(f"#{row['number']}: measured {row['value_ms']:.4f} ms, predicted {pred.time_ms:.4f} ms "
                          f"({pred.bound}-bound)<br>{_config_text(row, data.params)}")
    missing = len(ok) - len(info.numbers)
    if len(info.numbers) < 3:
        info.note = f"skipped: the model could not score {missing} of {len(ok)} validated trials"
        return info
    info.spearman = spearman(info.predicted_ms, info.measured_ms)
    info.median_ape = median_ape(info.predicted_ms, info.measured_ms)
    rho = "n/a" if math.isnan(info.spearman) else f"{info.spearman:+.3f}"
    info.title = (f"{base} ({data.hw.slug}): Spearman ρ = {rho}, median error {info.median_ape:.0f}% "
                  f"over {len(info.numbers)} trials" + (f" ({missing} not scored by the model)" if missing else ""))
    return info


def _get_model_fit_plot(info: ModelFitInfo) -> go.Figure:
    fig = go.Figure()
    for term in TERMS:
        idx = [i for i, b in enumerate(info.bound) if b == term]
        if idx:
            fig.add_trace(go.Scatter(x=[info.measured_ms[i] for i in idx], y=[info.predicted_ms[i] for i in idx],
                                     mode="markers", name=f"{term}-bound", marker={"size": 8},
                                     hovertext=[info.hover[i] for i in idx], hoverinfo="text"))
    if info.measured_ms:
        lo = min(info.measured_ms + info.predicted_ms) / 1.2
        hi = max(info.measured_ms + info.predicted_ms) * 1.2
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x",
                                 line={"dash": "dash", "color": "grey"}, hoverinfo="skip"))
    fig.update_layout(title=info.title, height=FIGURE_HEIGHT,
                      xaxis={"type": "log", "title": "measured ms"},
                      yaxis={"type": "log", "title": "predicted ms"})
    return fig


# ---------------------------------------------------------------------------------------------
# 4. Step roofline.

@dataclass
class RooflineInfo:
    title: str
    note: Optional[str]
    time_label: str = "measured"
    labels: list[str] = field(default_factory=list)          # one bar group per config
    numbers: list[int] = field(default_factory=list)
    time_us: list[float] = field(default_factory=list)       # the trial's µs per step
    # the model's bounds, µs per step of the whole kernel (per-step terms × waves; memory and compute / S)
    latency_us: list[float] = field(default_factory=list)
    throughput_us: list[float] = field(default_factory=list)
    memory_us: list[float] = field(default_factory=list)
    compute_us: list[float] = field(default_factory=list)
    binding: list[str] = field(default_factory=list)         # the model's binding term per group
    waves: list[int] = field(default_factory=list)

    def bound_us(self, i: int) -> float:
        return getattr(self, f"{self.binding[i]}_us")[i]


def _get_roofline_info(data: StudyData, top: int = ROOFLINE_TOP) -> RooflineInfo:
    base = f"step roofline: the best {top} configs"
    if data.hw is None or data.problem is None:
        return RooflineInfo(data.title(base), "skipped: no hardware profile for the study's GPU (or no problem shape)")
    best = data.ok.sort_values(["value_ms", "number"]).head(top)
    info = RooflineInfo(data.title(base), None, data.time_word)
    steps = data.problem.S
    for _, row in best.iterrows():
        pred = _prediction(data, row)
        if pred is None:
            continue
        waves = pred.geometry.waves
        info.numbers.append(int(row["number"]))
        info.labels.append(f"#{row['number']}")
        info.time_us.append(float(row["value_ms"]) * 1e3 / steps)
        # a step of the kernel lasts a step of every wave: the model's per-program terms × waves
        info.latency_us.append(pred.latency_us * waves)
        info.throughput_us.append(pred.throughput_us * waves)
        info.memory_us.append(pred.memory_ms * 1e3 / steps)
        info.compute_us.append(pred.compute_ms * 1e3 / steps)
        info.binding.append(pred.bound)
        info.waves.append(waves)
    if not info.labels:
        info.note = "skipped: no validated trial the model can score"
    info.title = data.title(f"step roofline: the best {len(info.labels)} configs, µs per step "
                            f"(S={steps}) against the model's bounds ({data.hw.slug})")
    return info


def _roofline_hover(info: RooflineInfo, i: int, config: str) -> str:
    """Which bound limits config i, and how far its time is from it."""
    bound = info.bound_us(i)
    ratio = info.time_us[i] / bound if bound > 0 else float("nan")
    text = (f"{info.labels[i]}: {info.time_us[i]:.3f} µs/step {info.time_label}<br>"
            f"bound by {info.binding[i]}: {bound:.3f} µs/step; {info.time_label} is {ratio:.2f}x it")
    if ratio < 1:
        text += " (under the bound: the model is pessimistic here)"
    return text + f"<br>{info.waves[i]} wave(s)" + (f"<br>{config}" if config else "")


def _get_roofline_plot(info: RooflineInfo, configs: Optional[list[str]] = None) -> go.Figure:
    fig = go.Figure()
    n = len(info.labels)
    hover = [_roofline_hover(info, i, configs[i] if configs else "") for i in range(n)]
    fig.add_trace(go.Bar(x=info.labels, y=info.time_us, name=f"{info.time_label} µs/step",
                         hovertext=hover, hoverinfo="text"))
    for term in TERMS:
        values = getattr(info, f"{term}_us")
        text = [f"{info.labels[i]}: {term} bound {values[i]:.4f} µs/step"
                + (" (binding)" if info.binding[i] == term else "") for i in range(n)]
        # the binding term's bar is outlined: the limit the config runs into
        fig.add_trace(go.Bar(x=info.labels, y=values, name=f"{term} bound", hovertext=text, hoverinfo="text",
                             marker={"line": {"width": [2.5 if b == term else 0 for b in info.binding],
                                              "color": "black"}}))
    fig.update_layout(title=info.title, height=FIGURE_HEIGHT, barmode="group",
                      xaxis={"type": "category", "title": "trial (best first)"},
                      yaxis={"type": "log", "title": "µs per step"}, legend={"orientation": "h", "y": -0.2})
    return fig


# ---------------------------------------------------------------------------------------------
# 5. Failures.

@dataclass
class FailuresInfo:
    title: str
    categories: list[str]
    counts: list[int]
    reasons: list[str]                   # the commonest reasons of each category (hover)


def _get_failures_info(data: StudyData) -> FailuresInfo:
    f = data.frame
    failed = f[~f["status"].isin([status.OK, DUPLICATE, UNSCORED])]
    counts = failed["status"].value_counts()
    categories = [str(c) for c in counts.index]
    reasons = []
    for category in categories:
        # space rules are joined with "; " when several fail: count them one by one
        parts = Counter(p.strip() for m in failed.loc[failed["status"] == category, "message"].dropna()
                        for p in str(m).split("; ") if p.strip())
        reasons.append("<br>".join(f"{k} × {html.escape(r[:110])}" for r, k in parts.most_common(4)) or "-")
    total = int((~f["status"].isin([DUPLICATE, UNSCORED])).sum())
    text = f"not validated: {int(counts.sum())} of {total} scored trials, by category"
    return FailuresInfo(data.title(text), categories, [int(c) for c in counts.values], reasons)


def _get_failures_plot(info: FailuresInfo) -> go.Figure:
    fig = go.Figure(go.Bar(x=info.categories, y=info.counts, text=info.counts, textposition="auto",
                           hovertext=[f"{c}: {n}<br>{r}" for c, n, r in zip(info.categories, info.counts, info.reasons)],
                           hoverinfo="text"))
    fig.update_layout(title=info.title, height=FIGURE_HEIGHT - 80, xaxis_title="category", yaxis_title="trials")
    return fig


# ---------------------------------------------------------------------------------------------
# The HTML file.

def _summary_rows(data: StudyData) -> list[tuple[str, str]]:
    ident, attrs, ok = data.identity, data.attrs, data.ok
    rows = []
    if ident:
        rows.append(("kernel, shape", f"{ident.get('variant')}, {ident.get('shape')}: {ident.get('problem', '')}"))
        how = ("PREDICTED by the performance model, not measured" if data.predicted
               else "measured on the GPU")
        rows.append(("GPU", f"{attrs.get('gpu_name', ident.get('gpu'))} ({ident.get('gpu')}); times {how}"))
    counts = data.frame["status"].value_counts()
    rows.append(("trials", ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"))
    if len(ok):
        b = ok.loc[ok["value_ms"].idxmin()]
        per_step = f" ({b['us_per_step']:.3f} µs/step)" if not _na(b["us_per_step"]) else ""
        rows.append((f"best ({data.time_word})", f"{b['value_ms']:.4f} ms{per_step}, trial {int(b['number'])}"))
        rows.append(("best config", " ".join(f"{k}={v}" for k, v in sorted(b["config"].items()))))
    confirm = attrs.get("confirm") or {}
    winner = confirm.get("winner")
    if winner:
        rows.append((f"confirmed ({confirm.get('rounds')} interleaved rounds)",
                     f"{winner['median_ms']:.4f} ms, trial {winner.get('trial')}: "
                     + " ".join(f"{k}={v}" for k, v in sorted(winner["config"].items()))))
    if confirm.get("default_ms"):
        speedup = confirm.get("speedup_vs_default")
        rows.append(("default config (same rounds)", f"{confirm['default_ms']:.4f} ms"
                     + (f"; tuned is {speedup:.2f}x faster" if speedup else "")))
    env = attrs.get("environment") or {}
    if env:
        rows.append(("versions", ", ".join(f"{k} {env[k]}" for k in ("triton", "torch", "m2tune") if env.get(k))))
    return rows


def _figures(data: StudyData) -> list[tuple[Optional[go.Figure], Optional[str]]]:
    """(figure, note) pairs in page order; a figure that cannot be drawn leaves its note."""
    out: list[tuple[Optional[go.Figure], Optional[str]]] = [(_get_history_plot(_get_history_info(data)), None)]
    if data.params and len(data.ok):
        out.append((_get_param_effects_plot(_get_param_effects_info(data)), None))
    fit = _get_model_fit_info(data)
    out.append((None, f"Model vs measurement {fit.note}") if fit.note else (_get_model_fit_plot(fit), None))
    roof = _get_roofline_info(data)
    if roof.note:
        out.append((None, f"Step roofline {roof.note}"))
    else:
        best = data.ok.set_index("number")
        configs = [_config_text(best.loc[n], data.params) for n in roof.numbers]
        out.append((_get_roofline_plot(roof, configs), None))
    failures = _get_failures_info(data)
    if failures.categories:
        out.append((_get_failures_plot(failures), None))
    return out


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h2 { border-top: 2px solid #ccc; padding-top: .8em; }
.predicted { background: #c0392b; color: white; padding: .1em .4em; border-radius: 3px; font-size: 70%; }
table { border-collapse: collapse; margin: .5em 0 1em; }
td { border: 1px solid #ddd; padding: .25em .6em; vertical-align: top; }
td:first-child { color: #555; white-space: nowrap; }
.note { color: #8a6d3b; background: #fcf8e3; padding: .4em .7em; }
"""


def _redacted(url: str) -> str:
    """The storage URL without its password (a PostgreSQL URL may carry one)."""
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:               # not an RDB URL (":memory:"): nothing to hide
        return url


def _study_section(data: StudyData, first: list[bool]) -> str:
    badge = ' <span class="predicted">PREDICTED</span>' if data.predicted else ""
    parts = [f'<section><h2 id="{html.escape(data.name)}">{html.escape(data.name)}{badge}</h2>', "<table>"]
    parts += [f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in _summary_rows(data)]
    parts.append("</table>")
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in data.notes]
    for fig, note in _figures(data):
        if fig is None:
            parts.append(f'<p class="note">{html.escape(note or "")}</p>')
            continue
        # plotly.js (several MB) goes into the page once, with the first figure; the rest reuse it
        parts.append(fig.to_html(full_html=False, include_plotlyjs=first[0], config={"displaylogo": False}))
        first[0] = False
    parts.append("</section>")
    return "\n".join(parts)


def _load_studies(storage_url: str, names: Optional[Sequence[str]]) -> list[Any]:
    import optuna

    from .storage import open_storage, quiet
    if storage_url.startswith("sqlite:///"):
        path = Path(storage_url[len("sqlite:///"):])
        if not path.is_file():            # SQLite would create an empty database there
            raise ReportError(f"no study database at {path}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with quiet():
        storage = open_storage(storage_url)
        known = optuna.get_all_study_names(storage=storage)
        missing = [n for n in names or () if n not in known]
        if missing:
            raise ReportError(f"no study {missing} in {_redacted(storage_url)}; it has {known or 'none'}")
        chosen = list(names) if names else known
        if not chosen:
            raise ReportError(f"{_redacted(storage_url)} holds no study")
        return [optuna.load_study(study_name=n, storage=storage) for n in chosen]


def write_report(storage_url: str, out_path: str | Path, studies: Optional[Sequence[str]] = None) -> Path:
    """Write the dashboards of `studies` (default: every study in the storage) into one HTML file."""
    loaded = [load_study_data(s) for s in _load_studies(storage_url, studies)]
    first = [True]
    sections = [_study_section(d, first) for d in loaded]
    index = "".join(f'<li><a href="#{html.escape(d.name)}">{html.escape(d.name)}</a>'
                    + (" (PREDICTED)" if d.predicted else "") + "</li>" for d in loaded)
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>m2tune report</title>"
            f"<style>{_STYLE}</style></head><body>\n<h1>m2tune report</h1>\n"
            f"<p>{len(loaded)} stud{'y' if len(loaded) == 1 else 'ies'} from <code>{html.escape(_redacted(storage_url))}</code></p>"
            f"<ul>{index}</ul>\n" + "\n".join(sections) + "\n</body></html>\n")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
