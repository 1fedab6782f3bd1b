"""A roofline for a sequential kernel: `_get_roofline_info` (plain data) and `_get_roofline_plot`.

x: state elements one SM advances per step (log), y: µs per step (log). The roofs are
m2tune/model/roofs.py's, from the study GPU's hardware profile: the step-latency floor of one
dependency chain (flat: less work per SM does not shorten a chain), and the SFU (tanh), FMA, tensor
core and memory throughput lines (slope 1: time grows with work). A point under every throughput
line but on the floor is latency-bound, and no amount of parallel work hides that; the knee, where
the highest throughput line meets the floor, says how much more work per SM a step could carry for
free. Every validated trial is a point, coloured by its MATMUL; the winner and the default are
annotated; each point's binding roof (the highest of its own roofs) is in its hover, and the
caption says which roof binds the winner and how far above it the winner runs.

For one shape every config does the same work, so the points share an x but for padding: each
MATMUL's points are moved by a few per cent in x so that they do not hide each other (the hover
gives the exact x).
"""

import html
import math
from dataclasses import dataclass, field
from typing import Optional

import plotly.graph_objects as go

from ..model.roofs import ROOFS, RoofError, StepRoofs, issue_rates, step_roofs
from ..problem import KernelConfig
from .data import StudyData, changed_text, inference_only
from .modelfit import resources_of

FIGURE_HEIGHT = 520
DODGE = 1.12                        # x factor between MATMUL groups (legibility only)
SPAN = 40                           # the x axis: the winner's x / SPAN to x * SPAN
LINE_NAMES = {"latency": "step-latency floor (one dependency chain, model)", "sfu": "SFU: tanh",
              "fma": "FMA: H·W on the FP32 cores", "tensor": "tensor cores: H·W (measured matmul rate)",
              "memory": "memory: HBM bandwidth (measured)"}


@dataclass
class RooflinePoint:
    number: Optional[int]                # trial number (None: the default, timed by the confirm stage only)
    label: str                           # the config by its changed parameters
    matmul: str
    x: float
    time_us: float                       # µs per step, measured (or predicted in a model study)
    roofs: dict[str, float]              # its own roofs, µs per step
    binding: str
    waves: int
    inference_only: bool = False

    @property
    def ratio(self) -> float:
        """How far above its binding roof the point runs (1: on it)."""
        return self.time_us / self.roofs[self.binding]


@dataclass
class RoofLine:
    name: str                            # a key of LINE_NAMES
    x: list[float]
    y: list[float]


@dataclass
class RooflineInfo:
    title: str
    note: Optional[str]                  # why nothing is drawn
    time_label: str = "measured"
    points: list[RooflinePoint] = field(default_factory=list)
    lines: list[RoofLine] = field(default_factory=list)
    winner: Optional[RooflinePoint] = None
    default: Optional[RooflinePoint] = None
    caption: str = ""
    skipped: int = 0                     # validated trials the model could not place


def _point(data: StudyData, number: Optional[int], config: dict, time_ms: float,
           resources: Optional[dict] = None) -> RooflinePoint:
    assert data.problem is not None and data.hw is not None
    variant = data.identity["variant"]
    r: StepRoofs = step_roofs(data.problem, KernelConfig.of(variant, config), data.hw, resources)
    return RooflinePoint(number, changed_text(config, data.default), str(config.get("MATMUL")), r.x,
                         time_ms * 1e3 / data.problem.S, r.roofs, r.binding, r.waves, inference_only(variant, config))


def _lines(data: StudyData, ref: RooflinePoint) -> list[RoofLine]:
    """The reference config's (the winner's) roofs as lines over x: its chain as the floor (one wave),
    its throughput roofs with their slopes; the FMA line also for a tensor-core config, as what the
    same product would cost on the FP32 cores."""
    lo, hi = ref.x / SPAN, ref.x * SPAN
    grid = [lo * (hi / lo) ** (i / 40) for i in range(41)]
    floor = ref.roofs["latency"] / ref.waves
    out = [RoofLine("latency", [lo, hi], [floor, floor])]
    slopes = {name: us / ref.x for name, us in ref.roofs.items() if name != "latency"}
    if "fma" not in slopes and data.hw is not None and issue_rates(data.hw):
        fma_config = {**_config_of(data, ref), "MATMUL": "fma"}
        try:
            slopes["fma"] = _point(data, None, fma_config, 1.0).roofs["fma"] / ref.x
        except (RoofError, KeyError):
            pass
    for name in ROOFS[1:]:
        if name in slopes:
            out.append(RoofLine(name, grid, [x * slopes[name] for x in grid]))
    return out


def _config_of(data: StudyData, point: RooflinePoint) -> dict:
    if point.number is None:
        return dict(data.default)
    return dict(data.ok.set_index("number").loc[point.number, "config"])


def _caption(info: RooflineInfo) -> str:
    w = info.winner
    if w is None:
        return ""
    text = (f"Lines: the roofs of the winner (#{w.number}, {w.label}), which runs at {w.time_us:.3f} µs per step at "
            f"x = {w.x:,.0f} state elements per SM per step ({w.waves} wave{'s' if w.waves > 1 else ''}): "
            f"{w.ratio:.2f}x its binding roof, {LINE_NAMES[w.binding]}, {w.roofs[w.binding]:.3f} µs")
    if w.ratio < 1:
        text += f" (under it: the model's estimate of this roof is {1 / w.ratio - 1:.0%} pessimistic here)"
    text += "."
    throughput = {k: v for k, v in w.roofs.items() if k != "latency"}
    if w.binding == "latency" and throughput:
        top = max(throughput, key=throughput.get)
        knee = w.x * w.roofs["latency"] / throughput[top]
        text += (f" Its highest throughput roof, {LINE_NAMES[top]} ({throughput[top]:.3f} µs), would reach the chain "
                 f"only at x ≈ {knee:,.0f}, {knee / w.x:.1f}x this shape's work per SM: below that, more work per SM "
                 f"per step costs no time, and a step is as long as one dependency chain.")
    bound: dict[str, int] = {}
    for p in info.points:
        bound[p.binding] = bound.get(p.binding, 0) + 1
    text += " Binding roof of each point (its own roofs, in the hover): " + ", ".join(
        f"{k} {n}" for k, n in sorted(bound.items())) + "."
    if info.default is not None:
        d = info.default
        text += (f" The default runs at {d.time_us:.3f} µs per step ({d.time_us / w.time_us:.1f}x the winner), "
                 f"bound by {d.binding}.")
    return text + f" Each MATMUL's points are moved by a factor {DODGE} in x so that they do not hide each other."


def _get_roofline_info(data: StudyData) -> RooflineInfo:
    base = "roofline of a sequential kernel"
    if data.hw is None or data.problem is None or not data.identity.get("variant"):
        return RooflineInfo(data.title(base), "skipped: no hardware profile for the study's GPU (or no problem shape)")
    info = RooflineInfo(data.title(base), None, data.time_word)
    ok = data.ok.sort_values(["value_ms", "number"])
    for _, row in ok.iterrows():
        try:
            info.points.append(_point(data, int(row["number"]), row["config"], float(row["value_ms"]),
                                      resources_of(row)))
        except RoofError:
            info.skipped += 1
    if not info.points:
        info.note = "skipped: no validated trial the model can place"
        return info
    by_number = {p.number: p for p in info.points}
    info.winner = by_number.get(data.winner, info.points[0])
    default_rows = ok[ok["changed"] == "default"]
    confirm_default = (data.attrs.get("confirm") or {}).get("default_ms")
    if len(default_rows):
        info.default = by_number.get(int(default_rows.iloc[0]["number"]))
    elif confirm_default and data.default:
        try:
            # not a trial: the confirm stage timed it beside the winner
            info.default = _point(data, None, data.default, float(confirm_default))
        except RoofError:
            pass
    info.lines = _lines(data, info.winner)
    info.caption = _caption(info)
    info.title = data.title(f"{base}: {data.identity['variant']} at {data.identity.get('shape')} on "
                            f"{data.hw.slug}, {len(info.points)} validated trials ({info.time_label}) against the "
                            f"roofs of the hardware profile")
    return info


def _hover(p: RooflinePoint, time_label: str) -> str:
    roofs = "<br>".join(f"{'<b>' if k == p.binding else ''}{k}: {v:.4f} µs{'</b>' if k == p.binding else ''}"
                        for k, v in sorted(p.roofs.items(), key=lambda kv: -kv[1]))
    who = f"#{p.number}" if p.number is not None else "default (confirm stage)"
    return (f"{who}: {html.escape(p.label)}<br>{p.time_us:.3f} µs/step {time_label}, x = {p.x:,.0f}, "
            f"{p.waves} wave(s)<br>binding roof: {p.binding}, {p.ratio:.2f}x above it"
            + ("<br>inference only (products round the state)" if p.inference_only else "") + f"<br>{roofs}")


def _get_roofline_plot(info: RooflineInfo) -> go.Figure:
    fig = go.Figure()
    dash = {"latency": "solid", "sfu": "dash", "fma": "dot", "tensor": "dashdot", "memory": "longdash"}
    for line in info.lines:
        fig.add_trace(go.Scatter(x=line.x, y=line.y, mode="lines", name=LINE_NAMES[line.name],
                                 line={"color": "black" if line.name == "latency" else "grey", "dash": dash[line.name],
                                       "width": 2.5 if line.name == "latency" else 1.5}, hoverinfo="name"))
    groups = list(dict.fromkeys(p.matmul for p in info.points))
    shift = {m: DODGE ** (i - (len(groups) - 1) / 2) for i, m in enumerate(groups)}
    for matmul in groups:
        pts = [p for p in info.points if p.matmul == matmul]
        name = f"MATMUL={matmul}" + (" (inference only)" if all(p.inference_only for p in pts) else "")
        marker = {"size": 8, "opacity": 0.8, "line": {"width": 0.5, "color": "white"}}
        fig.add_trace(go.Scatter(x=[p.x * shift[matmul] for p in pts], y=[p.time_us for p in pts], mode="markers",
                                 name=name, marker=marker,
                                 hovertext=[_hover(p, info.time_label) for p in pts], hoverinfo="text"))
    for p, text, ax, ay in ((info.winner, "winner", -170, 40), (info.default, "default", 150, -30)):
        if p is None:
            continue
        x = p.x * shift.get(p.matmul, 1.0) if p.number is not None else p.x
        if p.number is None:          # the confirm stage's default is not a trial: draw it
            fig.add_trace(go.Scatter(x=[x], y=[p.time_us], mode="markers", name="default (confirm stage)",
                                     marker={"size": 11, "symbol": "diamond", "color": "black"},
                                     hovertext=[_hover(p, info.time_label)], hoverinfo="text"))
        fig.add_annotation(x=math.log10(x), y=math.log10(p.time_us), ax=ax, ay=ay, showarrow=True, arrowhead=2,
                           text=f"{text}: {p.time_us:.3f} µs/step, {p.binding}-bound, {p.ratio:.1f}x its roof",
                           bgcolor="rgba(255,255,255,0.85)")
    # the axes hold the points and the roofs at their x, not the lines' far ends
    ys = [p.time_us for p in info.points] + [v for p in info.points for v in p.roofs.values()]
    x0 = info.lines[0].x[0]
    fig.update_layout(title=info.title, height=FIGURE_HEIGHT,
                      xaxis={"type": "log", "title": "state elements per step per SM (work per step per SM)",
                             "range": [math.log10(x0), math.log10(x0 * SPAN * SPAN)]},
                      yaxis={"type": "log", "title": f"µs per step ({info.time_label})",
                             "range": [math.log10(min(ys) / 3), math.log10(max(ys) * 3)]},
                      legend={"orientation": "v", "x": 1.02, "y": 1})
    return fig
