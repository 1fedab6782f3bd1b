"""Model vs measurement for one study: `_get_model_fit_info` (plain data) and `_get_model_fit_plot`.

The performance model's constants were fitted by `m2tune calibrate` to its own micro-benchmark rows
(kept in hardware.json: calibration problems at S=512, not the users' shapes). A trial whose problem
and config are one of those rows is in-sample: the fit saw it. The rank correlation and the median
error are taken over the held-out trials only, so they say how far the model's pruning and ranking
can be trusted on shapes it was not fitted to.
"""

import html
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import plotly.graph_objects as go

from ..model import perfmodel
from ..model.fitting import median_ape, spearman
from ..problem import KernelConfig
from .data import StudyData, is_missing

FIGURE_HEIGHT = 430
TERMS = ("latency", "throughput", "memory", "compute")   # perfmodel.Prediction.bound values
PROBLEM_KEYS = ("B", "S", "K", "V", "Nq", "Nk", "Nv", "Nw", "Nf", "dtype")


def resources_of(row: Any) -> Optional[dict[str, int]]:
    """The compiled kernel's registers and shared memory when the trial recorded them (the occupancy
    they set is the model's largest source of error otherwise)."""
    if is_missing(row["n_regs"]):
        return None
    return {"n_regs": int(row["n_regs"]), "shared": 0 if is_missing(row["shared"]) else int(row["shared"])}


def _prediction(data: StudyData, row: Any) -> Optional[perfmodel.Prediction]:
    if data.problem is None or data.hw is None or not data.identity.get("variant"):
        return None
    config = KernelConfig.of(data.identity["variant"], row["config"])
    try:
        return perfmodel.predict(data.problem, config, data.hw, resources_of(row))
    except (perfmodel.ModelError, KeyError):      # no constants for the variant, not resident, ...
        return None


def calibration_keys(data: StudyData) -> set[str]:
    """The (problem, config) pairs the model's constants were fitted to, for the study's kernel."""
    rows = (data.hw.raw if data.hw else {}).get(data.identity.get("variant") or "", [])
    return {_key(r.get("problem") or {}, r.get("config") or {}) for r in rows}


def _key(problem: dict[str, Any], config: dict[str, Any]) -> str:
    return repr(([problem.get(k) for k in PROBLEM_KEYS], sorted(config.items())))


@dataclass
class ModelFitInfo:
    title: str
    note: Optional[str]                  # why nothing is drawn
    numbers: list[int] = field(default_factory=list)
    measured_ms: list[float] = field(default_factory=list)
    predicted_ms: list[float] = field(default_factory=list)
    bound: list[str] = field(default_factory=list)
    held_out: list[bool] = field(default_factory=list)   # not among the calibration rows
    hover: list[str] = field(default_factory=list)
    spearman: Optional[float] = None     # over the held-out trials
    median_ape: Optional[float] = None   # %, over the held-out trials
    caption: str = ""


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
    fitted = calibration_keys(data)
    problem = {k: getattr(data.problem, k) for k in PROBLEM_KEYS}
    for _, row in ok.iterrows():
        pred = _prediction(data, row)
        if pred is None:
            continue
        held = _key(problem, row["config"]) not in fitted
        info.numbers.append(int(row["number"]))
        info.measured_ms.append(float(row["value_ms"]))
        info.predicted_ms.append(pred.time_ms)
        info.bound.append(pred.bound)
        info.held_out.append(held)
        info.hover.append(f"#{row['number']}: measured {row['value_ms']:.4f} ms, predicted {pred.time_ms:.4f} ms "
                          f"({pred.bound}-bound){'' if held else ', IN the calibration fit'}"
                          f"<br>{html.escape(row['changed'])}")
    missing = len(ok) - len(info.numbers)
    held = [i for i, h in enumerate(info.held_out) if h]
    if len(held) < 3:
        info.note = (f"skipped: {len(held)} held-out trials the model can score ({missing} of {len(ok)} "
                     f"validated not scored, {len(info.numbers) - len(held)} in its calibration fit)")
        return info
    predicted, measured = [info.predicted_ms[i] for i in held], [info.measured_ms[i] for i in held]
    info.spearman = spearman(predicted, measured)
    info.median_ape = median_ape(predicted, measured)
    rho = "n/a" if math.isnan(info.spearman) else f"{info.spearman:+.3f}"
    info.title = (f"{base}, held-out trials ({data.hw.slug}): Spearman ρ = {rho}, median error "
                  f"{info.median_ape:.0f}% over {len(held)} trials")
    in_fit = len(info.numbers) - len(held)
    info.caption = (f"Held out: the model's constants were fitted by m2tune calibrate to {len(fitted)} runs of "
                    f"its own calibration problems (hardware.json); "
                    + (f"none of these {len(held)} trials is among them." if not in_fit else
                       f"{in_fit} of these trials {'is' if in_fit == 1 else 'are'} among them, drawn open and left out "
                       "of ρ and the error.")
                    + (f" {missing} validated trials the model could not score." if missing else "")
                    + " Spearman ρ says how far the model's ranking (its pruning) can be trusted here.")
    return info


def _get_model_fit_plot(info: ModelFitInfo) -> go.Figure:
    fig = go.Figure()
    for term in TERMS:
        for held in (True, False):
            idx = [i for i, (b, h) in enumerate(zip(info.bound, info.held_out)) if b == term and h == held]
            if idx:
                fig.add_trace(go.Scatter(
                    x=[info.measured_ms[i] for i in idx], y=[info.predicted_ms[i] for i in idx], mode="markers",
                    name=f"{term}-bound" + ("" if held else ", in the fit"),
                    marker={"size": 8, "symbol": "circle" if held else "circle-open"},
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
