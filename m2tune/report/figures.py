"""A study's trials as figures: history, parameter effects, failures. Each split into
`_get_<name>_info` (plain data that tests check) and `_get_<name>_plot` (a plotly Figure, or for the
failures an HTML table), as Optuna's visualization module does it.

Configs are named by the parameters they change from the template's default (every trial shares
most of them); configs the spec refuses for training (a forward whose products round the state)
are marked "inference only" wherever a trial is drawn.
"""

import html
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import status
from ..status import DUPLICATE, UNSCORED
from .data import CATEGORICAL_MAX, StudyData, inference_only, is_missing

FIGURE_HEIGHT = 430
INFERENCE_ONLY = "inference only (products round the state)"
FAILURE_ROWS = 8                    # reasons in the failures table

# ---------------------------------------------------------------------------------------------
# 1. History.


@dataclass
class HistoryInfo:
    title: str
    y_label: str
    numbers: list[int]                   # validated trials, by number
    values_ms: list[float]
    hover: list[str]
    inference_only: list[bool]
    best_ms: list[float]                 # best so far at each of `numbers` (non-increasing)
    # no time, so never on the time axis: a lane of their own under it, one row per category
    failures: dict[str, list[int]]       # category -> trial numbers (duplicates and unscored left out)
    failure_hover: dict[str, list[str]]
    winner: Optional[int] = None


def _failed(f: pd.DataFrame) -> pd.DataFrame:
    return f[~f["status"].isin([status.OK, DUPLICATE, UNSCORED])]


def _get_history_info(data: StudyData) -> HistoryInfo:
    ok = data.ok.sort_values("number")
    best = ok["value_ms"].cummin().tolist()
    f = data.frame
    failures: dict[str, list[int]] = {}
    failure_hover: dict[str, list[str]] = {}
    for category, group in _failed(f).groupby("status", sort=True):
        failures[str(category)] = group["number"].tolist()
        failure_hover[str(category)] = [f"#{r['number']} {category}<br>{html.escape(r['changed'])}"
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
    hover = [f"#{r['number']}: {r['value_ms']:.4f} ms<br>{html.escape(r['changed'])}"
             + (f"<br>{INFERENCE_ONLY}" if r["inference_only"] else "") for _, r in ok.iterrows()]
    return HistoryInfo(data.title(text), f"{data.time_word} time (ms)", ok["number"].tolist(),
                       ok["value_ms"].tolist(), hover, ok["inference_only"].astype(bool).tolist(), best,
                       failures, failure_hover, data.winner)


def _get_history_plot(info: HistoryInfo) -> go.Figure:
    lanes = bool(info.failures)
    fig = make_subplots(rows=2 if lanes else 1, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        row_heights=[0.7, 0.3] if lanes else None,
                        subplot_titles=["validated trials", "not validated: no time, a lane per reason"]
                        if lanes else None)
    for marked, name, symbol in ((False, "validated", "circle"), (True, f"validated, {INFERENCE_ONLY}", "triangle-up")):
        idx = [i for i, m in enumerate(info.inference_only) if m == marked]
        if idx:
            fig.add_trace(go.Scatter(x=[info.numbers[i] for i in idx], y=[info.values_ms[i] for i in idx],
                                     mode="markers", name=name, marker={"size": 7, "symbol": symbol},
                                     hovertext=[info.hover[i] for i in idx], hoverinfo="text"), row=1, col=1)
    if info.numbers:
        fig.add_trace(go.Scatter(x=info.numbers, y=info.best_ms, mode="lines", name="best so far",
                                 line={"shape": "hv", "width": 2}, hoverinfo="skip"), row=1, col=1)
    if info.winner is not None and info.winner in info.numbers:
        i = info.numbers.index(info.winner)
        fig.add_annotation(x=info.winner, y=math.log10(info.values_ms[i]), text=f"winner #{info.winner}",
                           showarrow=True, arrowhead=2, ay=-30, row=1, col=1)
    for category, numbers in info.failures.items():
        fig.add_trace(go.Scatter(x=numbers, y=[f"{category} ({len(numbers)})"] * len(numbers), mode="markers",
                                 name=category, marker={"symbol": "x", "size": 7},
                                 hovertext=info.failure_hover[category], hoverinfo="text"), row=2, col=1)
    fig.update_yaxes(type="log", title_text=info.y_label, row=1, col=1)
    if lanes:
        fig.update_yaxes(type="category", row=2, col=1)
    fig.update_xaxes(title_text="trial number", row=2 if lanes else 1, col=1)
    fig.update_layout(title=info.title, height=FIGURE_HEIGHT + (120 if lanes else 0),
                      legend={"orientation": "h", "y": -0.15})
    return fig


# ---------------------------------------------------------------------------------------------
# 2. Parameter effects.

@dataclass
class ParamPanel:
    name: str
    numeric: bool                        # many numeric values: a scatter on a value axis, not boxes
    trials: dict[str, list[int]]         # value label -> validated trial numbers (space order)
    times_ms: dict[str, list[float]]     # value label -> their times
    inference_only: set[str] = field(default_factory=set)   # values that make a config inference only

    def tick(self, label: str) -> str:
        """A box's label: its value, whether it serves inference only, and its n (a box of 2 looks
        as sure as a box of 20 otherwise)."""
        mark = "<br>inference<br>only" if label in self.inference_only else ""
        return f"{label}{mark}<br>n={len(self.trials[label])}"


@dataclass
class ParamEffectsInfo:
    title: str
    y_label: str
    panels: list[ParamPanel]


def _order_key(value: Any) -> tuple[int, Any]:
    # numbers by value (2 before 16), anything else after them by its text
    return (0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, str(value))


def _panel(name: str, order: list[Any], ok: pd.DataFrame, data: StudyData) -> ParamPanel:
    present = ok[name].dropna().unique().tolist()
    values = [v for v in order if v in present] + sorted((v for v in present if v not in order), key=_order_key)
    numeric = not order and len(values) > CATEGORICAL_MAX
    if numeric:
        values = sorted(values)
    panel = ParamPanel(name, numeric, {}, {})
    for v in values:
        rows = ok[ok[name] == v]
        panel.trials[str(v)] = rows["number"].tolist()
        panel.times_ms[str(v)] = rows["value_ms"].tolist()
        # the value itself, not the company it kept: the default config with it is refused for training
        if data.default and inference_only(data.identity.get("variant"), {**data.default, name: v}):
            panel.inference_only.add(str(v))
    return panel


def _get_param_effects_info(data: StudyData) -> ParamEffectsInfo:
    ok = data.ok
    panels = [_panel(name, order, ok, data) for name, order in data.params.items()]
    text = f"time by parameter value ({len(ok)} validated trials; n = trials per box)"
    return ParamEffectsInfo(data.title(text), f"{data.time_word} ms", panels)


def _get_param_effects_plot(info: ParamEffectsInfo) -> go.Figure:
    cols = min(3, max(1, len(info.panels)))
    rows = max(1, math.ceil(len(info.panels) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p.name for p in info.panels] or None,
                        horizontal_spacing=0.07, vertical_spacing=0.2)
    for i, panel in enumerate(info.panels):
        r, c = i // cols + 1, i % cols + 1
        labels = [label for label, ts in panel.times_ms.items() for _ in ts]
        ys = [t for ts in panel.times_ms.values() for t in ts]
        nums = [n for ns in panel.trials.values() for n in ns]
        hover = [f"#{n}: {panel.name}={x}, {y:.4f} ms" for n, x, y in zip(nums, labels, ys)]
        if panel.numeric:
            trace = go.Scatter(x=[float(x) for x in labels], y=ys, mode="markers", hovertext=hover,
                               hoverinfo="text", showlegend=False)
        else:
            trace = go.Box(x=[panel.tick(x) for x in labels], y=ys, boxpoints="all", jitter=0.4, pointpos=0,
                           hovertext=hover, hoverinfo="text", showlegend=False, marker={"size": 5})
        fig.add_trace(trace, row=r, col=c)
        if not panel.numeric:
            # labels like "16" would otherwise make a numeric axis and lose the space's order
            fig.update_xaxes(type="category", categoryorder="array", tickangle=0, tickfont={"size": 10},
                             categoryarray=[panel.tick(x) for x in panel.times_ms], row=r, col=c)
        fig.update_yaxes(type="log", row=r, col=c, title_text=info.y_label if c == 1 else None)
    fig.update_layout(title=info.title, height=max(FIGURE_HEIGHT, 360 * rows + 100))
    return fig


# ---------------------------------------------------------------------------------------------
# 3. Failures: a table, so the reasons are read without hovering.

@dataclass
class FailuresInfo:
    title: str
    categories: list[str]
    counts: list[int]                    # trials per category
    # the commonest reasons: (category, trials, an example message); numbers in a message are
    # folded so that "predicted 8.4 ms > ..." and "predicted 9.8 ms > ..." count as one reason
    reasons: list[tuple[str, int, str]]


def _rules(message: str) -> list[str]:
    """A message's reasons: the space's rules are joined by "; " when several fail (never split
    inside parentheses: a rule's own text may hold one)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(message):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and message.startswith("; ", i):
            parts.append(message[start:i])
            start = i + 2
    parts.append(message[start:])
    return [p.strip() for p in parts if p.strip()]


def _get_failures_info(data: StudyData, top: int = FAILURE_ROWS) -> FailuresInfo:
    failed = _failed(data.frame)
    counts = failed["status"].value_counts()
    reasons: Counter = Counter()
    example: dict[tuple[str, str], str] = {}
    for category, message in zip(failed["status"], failed["message"]):
        for rule in _rules(str(message)) if not is_missing(message) else ["(no message)"]:
            key = (str(category), re.sub(r"\d+(\.\d+)?", "#", rule))
            reasons[key] += 1
            example.setdefault(key, rule)
    rows = [(c, n, example[(c, k)]) for (c, k), n in reasons.most_common(top)]
    total = int((~data.frame["status"].isin([DUPLICATE, UNSCORED])).sum())
    text = f"not validated: {int(counts.sum())} of {total} scored trials; the {len(rows)} commonest reasons"
    return FailuresInfo(data.title(text), [str(c) for c in counts.index], [int(n) for n in counts.values], rows)


def _get_failures_table(info: FailuresInfo) -> str:
    """The failures as HTML: trials per category, then the commonest reasons with their counts."""
    by_category = ", ".join(f"{html.escape(c)} {n}" for c, n in zip(info.categories, info.counts))
    rows = "".join(f"<tr><td>{html.escape(c)}</td><td class=\"n\">{n}</td><td>{html.escape(r)}</td></tr>"
                   for c, n, r in info.reasons)
    return (f'<div class="failures"><h3>{html.escape(info.title)}</h3><p>{by_category}</p>'
            f'<table><tr><th>category</th><th>trials</th><th>reason (an example; numbers vary)</th></tr>'
            f"{rows}</table></div>")
