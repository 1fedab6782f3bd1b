"""Throughput across shapes, from bench and training result files (results.py): per pass (forward,
forward+backward, backward alone) `_get_throughput_info` (plain data) and `_get_throughput_plot`.

One bar per (shape, implementation): tokens per second on a log axis (the eager reference is
hundreds of times slower than a kernel), the peak extra memory beside it where the file measured it,
and on every number its label: measured, PREDICTED (hatched) or interpreter (CPU wall time, crossed).
Bars are grouped by shape on a two-level axis, so a shape shows only the implementations measured
at it. An implementation measured at one shape by several files is named by each file's folder.
"""

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .results import KINDS

ROW_PX = 24
COLOURS = {"tuned": "#1f77b4", "other": "#ff7f0e", "default": "#8c8c8c", "reference": "#d62728"}
KIND_NAMES = {"tuned": "tuned (this shape's bucket or the nearest)", "other": "other implementation / config",
              "default": "template default", "reference": "eager reference"}
CAPTION = ("Implementations are named as their files name them; each bar's hover gives its kernels or config, "
           "why the runtime chose it, and its file. REJECTED (faded): the config failed validation. Peak extra "
           "memory: beyond the inputs and their gradients, over the whole training step.")
PATTERNS = {"measured": "", "predicted": "/", "interpreter": "x"}


@dataclass
class ThroughputBar:
    shape: str
    impl: str
    kind: str
    tokens_per_s: float
    ms: float
    label: str                           # measured, predicted or interpreter
    extra_mib: Optional[float]
    valid: bool
    source: str
    problem: str
    config: str = ""
    note: str = ""
    inference_only: bool = False

    @property
    def text(self) -> str:
        flag = "" if self.valid else "REJECTED · "
        label = self.label.upper() if self.label == "predicted" else self.label
        return f"{flag}{_si(self.tokens_per_s)} tok/s · {self.ms:.2f} ms · {label}"


@dataclass
class ThroughputInfo:
    pass_name: str
    title: str
    shapes: list[str] = field(default_factory=list)
    bars: list[ThroughputBar] = field(default_factory=list)      # by shape, then kind, then impl

    @property
    def has_memory(self) -> bool:
        return any(b.extra_mib is not None for b in self.bars)


def _si(value: float) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _named(frame: pd.DataFrame) -> pd.Series:
    """Implementation names, each qualified by its file's folder where two files time it at one shape."""
    folders = frame["source"].map(lambda s: Path(s).parent.name or s)
    clash = frame.groupby(["shape", "impl"])["source"].transform("nunique") > 1
    clashing = set(frame.loc[clash, "impl"])
    return pd.Series([f"{impl} · {folder}" if impl in clashing else impl
                      for impl, folder in zip(frame["impl"], folders)], index=frame.index)


def _get_throughput_info(results: pd.DataFrame, pass_name: str) -> Optional[ThroughputInfo]:
    frame = results[(results["pass"] == pass_name) & results["tokens_per_s"].notna()].copy()
    if frame.empty:
        return None
    frame["name"] = _named(frame)
    shapes = list(dict.fromkeys(frame["shape"]))
    frame["shape_rank"] = frame["shape"].map(shapes.index)
    frame["kind_rank"] = frame["kind"].map(KINDS.index)
    frame["first"] = range(len(frame))
    frame = frame.sort_values(["shape_rank", "kind_rank", "first"], kind="stable")
    bars = [ThroughputBar(r["shape"], r["name"], r["kind"], float(r["tokens_per_s"]), float(r["ms"]), r["label"],
                          None if pd.isna(r["extra_mib"]) else float(r["extra_mib"]), bool(r["valid"]), r["source"],
                          r["problem"], r["config"] or "", r["note"] or "", bool(r["inference_only"]))
            for _, r in frame.iterrows()]
    labels = sorted(set(frame["label"]))
    files = frame["source"].nunique()
    title = (f"{pass_name}: tokens per second by shape ({', '.join(labels)}; "
             f"{len(bars)} numbers from {files} file{'s' if files > 1 else ''})")
    if any(label != "measured" for label in labels):
        title = "PARTLY PREDICTED · " + title if "measured" in labels else "PREDICTED · " + title
    return ThroughputInfo(pass_name, title, shapes, bars)


def _hover(b: ThroughputBar) -> str:
    parts = [f"<b>{html.escape(b.impl)}</b> at {html.escape(b.shape)} ({html.escape(b.problem)})",
             f"{b.tokens_per_s:,.0f} tokens/s, {b.ms:.3f} ms ({b.label})"]
    if b.extra_mib is not None:
        parts.append(f"peak extra memory {b.extra_mib:,.0f} MiB ({b.label})")
    if b.config:
        parts.append(f"config: {html.escape(b.config)}")
    if b.inference_only:
        parts.append("inference only (products round the state)")
    if b.note:
        parts.append(html.escape(b.note[:200]))
    parts.append(f"from {html.escape(b.source)}")
    return "<br>".join(parts)


def _get_throughput_plot(info: ThroughputInfo) -> go.Figure:
    cols = 2 if info.has_memory else 1
    fig = make_subplots(rows=1, cols=cols, shared_yaxes=True, horizontal_spacing=0.02,
                        column_widths=[0.7, 0.3] if cols == 2 else None,
                        subplot_titles=["tokens per second (log)", "peak extra memory, MiB"][:cols])
    # two-level categories: shape, then implementation (a marked one says why)
    y = [[b.shape for b in info.bars],
         [b.impl + (" (inference only)" if b.inference_only else "") for b in info.bars]]
    colours = [COLOURS[b.kind] for b in info.bars]
    patterns = {"shape": [PATTERNS[b.label] for b in info.bars]}
    opacity = [1.0 if b.valid else 0.35 for b in info.bars]
    hover = [_hover(b) for b in info.bars]
    fig.add_trace(go.Bar(x=[b.tokens_per_s for b in info.bars], y=y, orientation="h", text=[b.text for b in info.bars],
                         textposition="outside", cliponaxis=False, hovertext=hover, hoverinfo="text", showlegend=False,
                         marker={"color": colours, "pattern": patterns, "opacity": opacity}), row=1, col=1)
    lo = min(b.tokens_per_s for b in info.bars)
    hi = max(b.tokens_per_s for b in info.bars)
    # room on the right of the longest bar for its label
    fig.update_xaxes(type="log", range=[math.log10(lo) - 0.3, math.log10(hi) + 1.2], row=1, col=1)
    if cols == 2:
        mib = [b.extra_mib for b in info.bars]
        fig.add_trace(go.Bar(x=mib, y=y, orientation="h", showlegend=False, hovertext=hover, hoverinfo="text",
                             text=[f"{m:,.0f} MiB · {b.label}" if m is not None else "not measured"
                                   for m, b in zip(mib, info.bars)],
                             textposition="outside", cliponaxis=False,
                             marker={"color": colours, "pattern": patterns, "opacity": opacity}), row=1, col=2)
        top = max(m for m in mib if m is not None)
        fig.update_xaxes(range=[0, top * 1.8], row=1, col=2)
    # legend entries only: an empty bar on the first row (a new category would add a row)
    first = [[y[0][0]], [y[1][0]]]
    for kind in KINDS:
        if any(b.kind == kind for b in info.bars):
            fig.add_trace(go.Bar(x=[None], y=first, name=KIND_NAMES[kind],
                                 marker={"color": COLOURS[kind]}, orientation="h", hoverinfo="skip"), row=1, col=1)
    for label, shape in PATTERNS.items():
        if shape and any(b.label == label for b in info.bars):
            fig.add_trace(go.Bar(x=[None], y=first, orientation="h",
                                 name=f"{label.upper() if label == 'predicted' else label} (pattern)",
                                 marker={"color": "white", "pattern": {"shape": shape}, "line": {"color": "black",
                                                                                                  "width": 1}},
                                 hoverinfo="skip"), row=1, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_layout(title=info.title, barmode="overlay", height=190 + ROW_PX * len(info.bars),
                      margin={"l": 10, "r": 20, "b": 70},
                      legend={"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0})
    return fig
