"""`m2tune report`: studies and bench/training results as dashboards in one self-contained HTML file.

Inputs (inputs.py): Optuna storages (--storage, or SQLite study files named or found in folders) and
result files (results.py). The page has

- Throughput (when result files were given): per pass, tokens per second by shape for every
  implementation the files timed (tuned, the template default, the eager reference, others), the
  peak extra memory beside it, every number labelled measured, predicted or interpreter;
- per study, after a short table (the best config, its time, the default's from the confirm stage):
  1. history: every validated trial's time by trial number and the best so far; trials without a
     time (rejected, pruned) in a lane of their own under the time axis, never on it;
  2. parameter effects: time by value of each searched parameter, n on every box;
  3. model vs measurement on the trials the model was not fitted to (held out);
  4. the roofline of a sequential kernel: µs per step against work per step per SM, under the roofs
     of the GPU's hardware profile, the binding one named;
  5. the failures: trials per category and the commonest reasons, as a table.

Configs are named by the parameters they change from the template's default, and configs that may
serve inference only (their products round the state) are marked. A study of the model backend
holds predictions, not measurements: everything drawn from one says PREDICTED.

Every figure is split as Optuna's visualization module does it: `_get_<name>_info` returns plain
data that tests check, `_get_<name>_plot` turns it into a plotly Figure (figures.py: the trials;
modelfit.py; roofline.py; throughput.py). pandas and plotly are imported by the report package and
nowhere else in m2tune: `import m2tune`, the op and the layer never load them. plotly.js is inlined
once, so the page opens offline.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import plotly.graph_objects as go

from .data import ReportError, StudyData, changed_text, inference_only, is_missing, load_study_data
from .figures import (_get_failures_info, _get_failures_table, _get_history_info, _get_history_plot,
                      _get_param_effects_info, _get_param_effects_plot)
from .inputs import Inputs, collect
from .modelfit import _get_model_fit_info, _get_model_fit_plot
from .results import PASSES, results_frame
from .roofline import _get_roofline_info, _get_roofline_plot
from .throughput import CAPTION, _get_throughput_info, _get_throughput_plot


def _summary_rows(data: StudyData, source: str) -> list[tuple[str, str]]:
    ident, attrs, ok = data.identity, data.attrs, data.ok
    rows = [("study file", source)]
    if ident:
        rows.append(("kernel, shape", f"{ident.get('variant')}, {ident.get('shape')}: {ident.get('problem', '')}"))
        how = ("PREDICTED by the performance model, not measured" if data.predicted
               else "measured on the GPU")
        rows.append(("GPU", f"{attrs.get('gpu_name', ident.get('gpu'))} ({ident.get('gpu')}); times {how}"))
    counts = data.frame["status"].value_counts()
    rows.append(("trials", ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"))
    if len(ok):
        b = ok.loc[ok["value_ms"].idxmin()]
        per_step = f" ({b['us_per_step']:.3f} µs/step)" if not is_missing(b["us_per_step"]) else ""
        rows.append((f"best ({data.time_word})", f"{b['value_ms']:.4f} ms{per_step}, trial {int(b['number'])}: "
                     f"{b['changed']}" + (" (inference only: its products round the state)"
                                          if b["inference_only"] else "")))
    confirm = attrs.get("confirm") or {}
    winner = confirm.get("winner")
    if winner:
        marked = " (inference only)" if inference_only(ident.get("variant"), winner["config"]) else ""
        rows.append((f"confirmed ({confirm.get('rounds')} interleaved rounds)",
                     f"{winner['median_ms']:.4f} ms, trial {winner.get('trial')}: "
                     f"{changed_text(winner['config'], data.default)}{marked}"))
    if confirm.get("default_ms"):
        speedup = confirm.get("speedup_vs_default")
        rows.append(("default config (same rounds)", f"{confirm['default_ms']:.4f} ms"
                     + (f"; tuned is {speedup:.2f}x faster" if speedup else "")))
    if data.default:
        rows.append(("the default (configs are named by what they change)",
                     " ".join(f"{k}={v}" for k, v in sorted(data.default.items()))))
    env = attrs.get("environment") or {}
    if env:
        rows.append(("versions", ", ".join(f"{k} {env[k]}" for k in ("triton", "torch", "m2tune") if env.get(k))))
    return rows


class _Html:
    """The page being written: plotly.js (several MB) goes in once, with the first figure."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.first = True

    def figure(self, fig: go.Figure, element_id: str, caption: str = "") -> None:
        self.parts.append(f'<div class="figure" id="{element_id}">')
        self.parts.append(fig.to_html(full_html=False, include_plotlyjs=self.first, div_id=f"{element_id}-plot",
                                      config={"displaylogo": False}))
        if caption:
            self.parts.append(f'<p class="caption">{html.escape(caption)}</p>')
        self.parts.append("</div>")
        self.first = False

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{html.escape(text)}</p>')

    def table(self, rows: Sequence[tuple[str, str]]) -> None:
        self.parts.append("<table>" + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                                              for k, v in rows) + "</table>")


def _study_section(page: _Html, data: StudyData, sid: str, source: str) -> None:
    badge = ' <span class="predicted">PREDICTED</span>' if data.predicted else ""
    page.parts.append(f'<section id="{sid}"><h2>{html.escape(data.name)}{badge}</h2>')
    page.table(_summary_rows(data, source))
    for n in data.notes:
        page.note(n)
    page.figure(_get_history_plot(_get_history_info(data)), f"{sid}-history")
    if data.params and len(data.ok):
        page.figure(_get_param_effects_plot(_get_param_effects_info(data)), f"{sid}-params")
    fit = _get_model_fit_info(data)
    if fit.note:
        page.note(f"Model vs measurement {fit.note}")
    else:
        page.figure(_get_model_fit_plot(fit), f"{sid}-model", fit.caption)
    roof = _get_roofline_info(data)
    if roof.note:
        page.note(f"Roofline {roof.note}")
    else:
        page.figure(_get_roofline_plot(roof), f"{sid}-roofline", roof.caption)
    failures = _get_failures_info(data)
    if failures.categories:
        page.parts.append(_get_failures_table(failures))
    page.parts.append("</section>")


def _throughput_section(page: _Html, inputs: Inputs) -> None:
    page.parts.append('<section id="throughput"><h2>Throughput</h2>')
    page.parts.append(f"<p>{len(inputs.result_files)} result files: "
                      + ", ".join(f"<code>{html.escape(f)}</code>" for f in inputs.result_files) + "</p>")
    page.parts.append(f'<p class="caption">{html.escape(CAPTION)}</p>')
    frame = results_frame(inputs.rows)
    for pass_name in PASSES:
        info = _get_throughput_info(frame, pass_name)
        if info is not None:
            page.figure(_get_throughput_plot(info), f"throughput-{pass_name.replace('+', '-')}")
    page.parts.append("</section>")


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1240px; color: #222; }
h2 { border-top: 2px solid #ccc; padding-top: .8em; }
.predicted { background: #c0392b; color: white; padding: .1em .4em; border-radius: 3px; font-size: 70%; }
table { border-collapse: collapse; margin: .5em 0 1em; }
td, th { border: 1px solid #ddd; padding: .25em .6em; vertical-align: top; text-align: left; }
td:first-child { color: #555; white-space: nowrap; }
td.n { text-align: right; }
.note { color: #8a6d3b; background: #fcf8e3; padding: .4em .7em; }
.caption { margin: 0 1em 1.5em; color: #333; }
.figure { background: white; }
"""


def _load_studies(storage_url: str, names: Optional[Sequence[str]], required: bool) -> list[Any]:
    import optuna

    from ..tuning.storage import open_storage, quiet, redacted
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with quiet():
        storage = open_storage(storage_url, create=False)
        known = optuna.get_all_study_names(storage=storage)
        if names and required:
            missing = [n for n in names if n not in known]
            if missing:
                raise ReportError(f"no study {missing} in {redacted(storage_url)}; it has {known or 'none'}")
        chosen = [n for n in known if n in names] if names else known
        if not chosen and required:
            raise ReportError(f"{redacted(storage_url)} holds no study")
        return [optuna.load_study(study_name=n, storage=storage) for n in chosen]


def _ids(names: Sequence[str]) -> list[str]:
    """An HTML id per study: its name in id characters, numbered where two files hold one name."""
    out: list[str] = []
    for name in names:
        base = re.sub(r"[^A-Za-z0-9_]+", "-", name).strip("-") or "study"
        sid, n = base, 1
        while sid in out:
            n += 1
            sid = f"{base}-{n}"
        out.append(sid)
    return out


def write_report(out_path: str | Path, *, storage_url: Optional[str] = None, paths: Sequence[str | Path] = (),
                 studies: Optional[Sequence[str]] = None) -> Path:
    """Write the dashboards into one HTML file: the studies of `storage_url` and of the study files in
    `paths`, and the throughput of the result files in `paths` (files and folders)."""
    from ..tuning.storage import redacted
    inputs = collect(paths)
    storages = ([storage_url] if storage_url else []) + inputs.storages
    if not storages and not inputs.rows:
        raise ReportError("nothing to report: give --storage or study and result files (or folders of them)"
                          + (f"; skipped {len(inputs.skipped)} files of no known format" if inputs.skipped else ""))
    loaded: list[tuple[StudyData, str]] = []
    for url in storages:
        # --study must exist in --storage; the files of a folder are searched for it
        required = url == storage_url
        loaded += [(load_study_data(s), redacted(url)) for s in _load_studies(url, studies, required)]
    if studies and not loaded:
        raise ReportError(f"no study {list(studies)} in {', '.join(redacted(u) for u in storages) or 'no storage'}")
    page = _Html()
    if inputs.rows:
        _throughput_section(page, inputs)
    ids = _ids([d.name for d, _ in loaded])
    for (data, source), sid in zip(loaded, ids):
        _study_section(page, data, sid, source)
    index = "".join(f'<li><a href="#{sid}">{html.escape(d.name)}</a>' + (" (PREDICTED)" if d.predicted else "")
                    + f" <small>{html.escape(src)}</small></li>" for (d, src), sid in zip(loaded, ids))
    if inputs.rows:
        index = '<li><a href="#throughput">Throughput</a></li>' + index
    skipped = "".join(f'<p class="note">skipped: {html.escape(s)}</p>' for s in inputs.skipped)
    head = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>m2tune report</title>"
            f"<style>{_STYLE}</style></head><body>\n<h1>m2tune report</h1>\n"
            f"<p>{len(loaded)} stud{'y' if len(loaded) == 1 else 'ies'}, {len(inputs.result_files)} result files</p>"
            f"<ul>{index}</ul>{skipped}\n")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(head + "\n".join(page.parts) + "\n</body></html>\n", encoding="utf-8")
    return out
