"""The report's figures: each split into `_get_<name>_info` (plain data that tests check) and
`_get_<name>_plot` (a plotly Figure), as Optuna's visualization module does it."""

import html
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import status
from ..model import perfmodel
from ..model.fitting import median_ape, spearman
from ..problem import KernelConfig
from ..status import DUPLICATE, UNSCORED
from .data import CATEGORICAL_MAX, StudyData, config_text, is_missing


ROOFLINE_TOP = 10                   # configs in the step roofline
FIGURE_HEIGHT = 430
TERMS = ("latency", "throughput", "memory", "compute")   # perfmodel.Prediction.bound values

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
        failure_hover[str(category)] = [f"#{r['number']} {category}<br>{config_text(r, data.params)}"
                                        f"<br>{html.escape(str(r['message'] or ''))[:160]}"
                                        for _, r in group.iterrows()]
    scored = int((~f["status"].isin([DUPLICATE, UNSCORED])).sum())
    dups = int((f["status"] == DUPLICATE).sum())
    text = f"{data.name}: {len(f)} trials ({scored} scored, {dups} duplicates)"
    if len(ok):
        b = ok.loc[ok["value_ms"].idxmin()]
        per_step = f", {b['us_per_step']:.3f} µs/step" if not is_missing(b["us_per_step"]) else ""
        text += f", best {b['value_ms']:.4f} ms (trial {int(b['number'])}{per_step})"
    else:
        text += ", no validated trial"
    hover = [f"#{r['number']}: {r['value_ms']:.4f} ms<br>{config_text(r, data.params)}" for _, r in ok.iterrows()]
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
    if not is_missing(row["n_regs"]):
        resources = {"n_regs": int(row["n_regs"]), "shared": 0 if is_missing(row["shared"]) else int(row["shared"])}
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
                          f"({pred.bound}-bound)<br>{config_text(row, data.params)}")
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
