"""Bench and training result files as data: one pandas row per timed implementation of one pass.

`m2tune report` takes these beside its studies. A file's format is told by its keys, never by its
name (the committed ones under bench/results/ are named by what they measured):

- `m2tune bench --out` (kind "m2tune.bench.forward"): a forward grid on one shape; rows for the
  grid's best, the template's default when the grid has it, and the eager PyTorch reference;
- training rows (a "rows" list whose rows have fwd_bwd_ms: bench/h200_training.py and
  bench/h200_lean_summary.py): forward+backward through the op, with the peak extra memory, and
  the backward alone where a row has bwd_ms; a row is named by its variant, config_name or
  runtime_choice, whichever it has;
- a tuned-config file (profiles/<gpu>/<kernel>.json, schema 1, also what `m2tune export` leaves in a
  result folder): per bucket the tuned config's time, the training entry's, and the default's
  from the same confirm rounds, each measured or predicted as the entry says.

Every number keeps its label: measured (CUDA events on a GPU), predicted (the performance model)
or interpreter (CPU wall time of the Triton interpreter: it says nothing about GPU speed).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd

from .data import ReportError, changed_text, default_config, inference_only

COLUMNS = ("source", "shape", "problem", "tokens", "pass", "impl", "kind", "ms", "p20_ms", "p80_ms",
           "tokens_per_s", "extra_mib", "label", "valid", "note", "config", "inference_only")
PASSES = ("forward", "forward+backward", "backward")
KINDS = ("tuned", "other", "default", "reference")     # drawing order
BENCH_KIND = "m2tune.bench.forward"


class ResultFormatError(ReportError):
    pass


def _problem(spec: Any, where: str) -> Any:
    """A Problem from a problem dict, a described problem ("B=4 S=4096 K=64 ... bfloat16") or a shape name."""
    from ..problem import DTYPES, Problem, shape
    try:
        if isinstance(spec, dict):
            fields = {k: v for k, v in spec.items() if k in Problem.__dataclass_fields__}
            if fields.get("seqlens") is not None:
                fields["seqlens"] = tuple(fields["seqlens"])
            return Problem(**fields)
        pairs = dict(re.findall(r"\b(B|S|K|V|Nq|Nk|Nv|Nw|Nf)=(\d+)", spec))
        if {"B", "S", "K", "V"} <= set(pairs):
            dtype = next((d for d in DTYPES if d in spec.split()), "bfloat16")
            return Problem(**{k: int(v) for k, v in pairs.items()}, dtype=dtype)
        return shape(spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise ResultFormatError(f"{where}: cannot tell the problem from {spec!r}: {str(exc).strip(chr(34))}") from None


def _row(source: str, shape: str, problem: Any, pass_: str, impl: str, kind: str, ms: Optional[float],
         label: str, **extra: Any) -> dict[str, Any]:
    row = dict.fromkeys(COLUMNS)
    row.update({"source": source, "shape": shape, "problem": problem.describe(), "tokens": problem.tokens,
                "pass": pass_, "impl": impl, "kind": kind, "ms": ms, "label": label,
                "tokens_per_s": problem.tokens / (ms / 1e3) if ms else None,
                "valid": True, "note": "", "config": "", "inference_only": False})
    row.update(extra)
    return row


def _bench_rows(data: dict, source: str) -> list[dict[str, Any]]:
    from .. import variants
    shape, kernel = data.get("shape", "?"), "m2rnn_fwd"
    problem = _problem(data["problem"], source)
    label = "measured" if data.get("backend") == "cuda" else "interpreter"
    default = default_config(kernel)
    spec = variants.spec(kernel)
    ok = [r for r in data.get("rows", []) if r.get("status") == "ok" and r.get("median_ms")]
    out = []
    best = data.get("best")
    if best and best.get("median_ms"):
        out.append(_row(source, shape, problem, "forward", f"best of bench grid {data.get('grid')!r}", "other",
                        best["median_ms"], label, p20_ms=best.get("p20_ms"), p80_ms=best.get("p80_ms"),
                        config=changed_text(best["config"], default),
                        inference_only=inference_only(kernel, best["config"])))
    # a grid row names only some parameters: the rest are the template's defaults
    for r in ok:
        if spec.config(r["config"]).as_dict() == default:
            out.append(_row(source, shape, problem, "forward", "template default", "default", r["median_ms"], label,
                            p20_ms=r.get("p20_ms"), p80_ms=r.get("p80_ms"), config="default"))
            break
    ref = data.get("reference_eager") or {}
    if ref.get("median_ms"):
        out.append(_row(source, shape, problem, "forward", "eager PyTorch reference", "reference", ref["median_ms"],
                        label, p20_ms=ref.get("p20_ms"), p80_ms=ref.get("p80_ms"),
                        note="m2rnn_reference, torch ops step by step, no m2tune kernel"))
    return out


def _training_name(row: dict) -> tuple[str, str, str]:
    """(implementation, kind, note) of one training row, from whichever name it carries."""
    if "variant" in row:
        why = str(row.get("why") or "")
        config = row.get("config") or {}
        kernels = " + ".join(str(config.get(p, {}).get("variant", "?")) for p in ("forward", "backward"))
        return str(row["variant"]), "default" if why.startswith("default") else "tuned", f"{kernels}: {why}"
    if "runtime_choice" in row:
        choice = row["runtime_choice"] or {}
        text = "; ".join(f"{k}: {v}" for k, v in choice.items())
        return "runtime's choice", "default" if ": default:" in text else "tuned", text
    if "config_name" in row:
        return str(row["config_name"]), "other", json.dumps(row.get("config") or {}, sort_keys=True)
    return "forward+backward", "other", ""


def _training_rows(data: dict, source: str) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(data["rows"]):
        if r.get("fwd_bwd_ms") is None:
            continue
        shape = str(r.get("shape", "?"))
        problem = _problem(r.get("problem") or shape, f"{source}: rows[{i}]")
        impl, kind, note = _training_name(r)
        valid = r.get("valid", True) is not False
        if not valid:
            note = f"REJECTED ({r.get('reason') or 'errors above tolerance'}); " + note
        out.append(_row(source, shape, problem, "forward+backward", impl, kind, r["fwd_bwd_ms"], "measured",
                        p20_ms=r.get("p20_ms"), p80_ms=r.get("p80_ms"), valid=valid, note=note,
                        extra_mib=r.get("peak_extra_mib")))
        if r.get("bwd_ms"):
            # the peak memory was taken over the whole step, not the backward alone
            out.append(_row(source, shape, problem, "backward", impl, kind, r["bwd_ms"], "measured", valid=valid,
                            note=note))
    return out


def _profile_rows(data: dict, source: str) -> list[dict[str, Any]]:
    from .. import variants
    kernel = data["kernel"]
    try:
        role = variants.spec(kernel).role
    except variants.UnknownVariant:
        raise ResultFormatError(f"{source}: tuned-config file for unknown kernel {kernel!r}") from None
    default = default_config(kernel)
    out = []
    for i, e in enumerate(data["entries"]):
        problem = _problem(e.get("bucket") or {}, f"{source}: entries[{i}]")
        shape = str(e.get("name") or problem.describe())
        label = "measured" if e.get("measured") else "predicted"
        note = f"study {e.get('study')}, {e.get('trials')} trials" if e.get("study") else ""
        config = e.get("config") or {}
        out.append(_row(source, shape, problem, role, f"tuned ({kernel})", "tuned", e.get("time_ms"), label,
                        config=changed_text(config, default), inference_only=inference_only(kernel, config),
                        note=note))
        training = e.get("training")
        if training and training.get("time_ms"):
            out.append(_row(source, shape, problem, role, f"tuned for training ({kernel})", "tuned",
                            training["time_ms"], label, config=changed_text(training.get("config") or {}, default),
                            note="the study's fastest state-accurate config"))
        if e.get("default_ms"):
            out.append(_row(source, shape, problem, role, f"template default ({kernel})", "default", e["default_ms"],
                            label, config="default", note="timed in the same confirm rounds as the tuned config"))
    return out


def _format(data: Any) -> Optional[str]:
    if not isinstance(data, dict):
        return None
    if data.get("kind") == BENCH_KIND:
        return "bench"
    rows = data.get("rows")
    if isinstance(rows, list) and any(isinstance(r, dict) and "fwd_bwd_ms" in r for r in rows):
        return "training"
    if {"schema", "kernel", "entries"} <= set(data) and isinstance(data["entries"], list):
        return "profile"
    return None


READERS = {"bench": _bench_rows, "training": _training_rows, "profile": _profile_rows}


def read_result(path: Path, source: Optional[str] = None) -> Optional[list[dict[str, Any]]]:
    """The rows of one result file, or None when it is JSON of no format this module reads."""
    source = source or str(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultFormatError(f"{source}: not a readable JSON file: {exc}") from None
    kind = _format(data)
    if kind is None:
        return None
    try:
        return READERS[kind](data, source)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ResultFormatError(f"{source}: a {kind} result file, but {type(exc).__name__}: {exc}") from None


def unknown_format(path: Path) -> str:
    try:
        keys = sorted(json.loads(Path(path).read_text(encoding="utf-8")))[:8]
    except (OSError, ValueError, TypeError):
        keys = []
    return (f"{path}: neither an Optuna study (.db) nor a result file m2tune reads (m2tune bench --out JSON, "
            f"training rows with fwd_bwd_ms, a tuned-config file); its keys: {keys or 'none'}")


def results_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=list(COLUMNS))
    for col in ("ms", "p20_ms", "p80_ms", "tokens_per_s", "extra_mib"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return frame
