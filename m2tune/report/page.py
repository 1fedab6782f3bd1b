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

Modules: data.py (studies -> pandas), figures.py (the figures), this file (the page).
pandas and plotly are imported by these three and nowhere else in m2tune: `import m2tune`, the op and
the layer never load them (training code must not need either).
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Optional, Sequence

import plotly.graph_objects as go

from .data import ReportError, StudyData, config_text, is_missing, load_study_data
from .figures import (_get_failures_info, _get_failures_plot, _get_history_info, _get_history_plot,
                      _get_model_fit_info, _get_model_fit_plot, _get_param_effects_info,
                      _get_param_effects_plot, _get_roofline_info, _get_roofline_plot)


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
        per_step = f" ({b['us_per_step']:.3f} µs/step)" if not is_missing(b["us_per_step"]) else ""
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
        configs = [config_text(best.loc[n], data.params) for n in roof.numbers]
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

    from ..tuning.storage import open_storage, quiet, redacted
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with quiet():
        storage = open_storage(storage_url, create=False)
        known = optuna.get_all_study_names(storage=storage)
        missing = [n for n in names or () if n not in known]
        if missing:
            raise ReportError(f"no study {missing} in {redacted(storage_url)}; it has {known or 'none'}")
        chosen = list(names) if names else known
        if not chosen:
            raise ReportError(f"{redacted(storage_url)} holds no study")
        return [optuna.load_study(study_name=n, storage=storage) for n in chosen]


def write_report(storage_url: str, out_path: str | Path, studies: Optional[Sequence[str]] = None) -> Path:
    """Write the dashboards of `studies` (default: every study in the storage) into one HTML file."""
    from ..tuning.storage import redacted
    loaded = [load_study_data(s) for s in _load_studies(storage_url, studies)]
    first = [True]
    sections = [_study_section(d, first) for d in loaded]
    index = "".join(f'<li><a href="#{html.escape(d.name)}">{html.escape(d.name)}</a>'
                    + (" (PREDICTED)" if d.predicted else "") + "</li>" for d in loaded)
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>m2tune report</title>"
            f"<style>{_STYLE}</style></head><body>\n<h1>m2tune report</h1>\n"
            f"<p>{len(loaded)} stud{'y' if len(loaded) == 1 else 'ies'} from <code>{html.escape(redacted(storage_url))}</code></p>"
            f"<ul>{index}</ul>\n" + "\n".join(sections) + "\n</body></html>\n")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
