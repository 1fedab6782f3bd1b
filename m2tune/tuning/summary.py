"""A study in a few numbers: what was tried, what failed and why, what won (dict and table)."""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Optional

from .. import status

TOP = 5


def summarize(tuner, *, wall_s: Optional[float] = None, confirm: Optional[dict] = None) -> dict[str, Any]:
    """The study of `tuner` (a tune.Tuner) in a few numbers, as plain data."""
    trials = tuner.study.get_trials(deepcopy=False)
    scored = [t for t in trials if status.scored(t)]
    ok = sorted((t for t in scored if status.is_ok(t)), key=lambda t: t.value)
    default = tuner.space.config({}).as_dict()
    top = [{"trial": t.number, "value_ms": t.value, "config": t.user_attrs.get("config"),
            "changed": {k: v for k, v in t.user_attrs.get("config", {}).items() if default.get(k) != v},
            "spread": status.spread_of(t.user_attrs), "max_error": status.max_error(t.user_attrs.get("errors"))}
           for t in ok[:TOP]]
    return {
        "study": tuner.name, "storage": tuner.opts.storage, "backend": tuner.opts.backend,
        "predicted": tuner.opts.backend == "model", "gpu": tuner.gpu_slug, "variant": tuner.opts.variant,
        "shape": tuner.opts.shape, "problem": tuner.problem.describe(),
        "trials": len(trials), "scored": len(scored),
        "run": sum(1 for t in scored if status.spends_budget(t)),
        "duplicates": sum(1 for t in trials if status.category(t) == status.DUPLICATE),
        "categories": dict(Counter(t.user_attrs["status"] for t in scored)),
        "best": top[0] if top else None, "top": top, "confirm": confirm,
        "wall_s": round(wall_s, 1) if wall_s is not None else None,
        "stop_reason": getattr(tuner, "stop_reason", None),
    }


def table(summary: dict[str, Any]) -> Iterable[str]:
    label = "predicted" if summary["predicted"] else "measured"
    yield (f"study {summary['study']} ({summary['backend']} backend, {summary['gpu']}): "
           f"{summary['scored']} trials scored ({summary['run']} run, {summary['scored'] - summary['run']} "
           f"answered before running), {summary['duplicates']} duplicates skipped"
           + (f", {summary['wall_s']:.0f} s" if summary.get("wall_s") is not None else ""))
    yield "  by status: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["categories"].items(),
                                                                     key=lambda kv: -kv[1]))
    yield f"  {'trial':>5} {label + ' ms':>13} {'spread':>7} {'max err':>9}  config (changes from default)"
    for row in summary["top"]:
        spread = f"{row['spread'] * 100:6.1f}%" if row["spread"] is not None else f"{'-':>7}"
        err = f"{row['max_error']:9.2e}" if row["max_error"] is not None else f"{'-':>9}"
        changed = " ".join(f"{k}={v}" for k, v in sorted(row["changed"].items())) or "(default)"
        yield f"  {row['trial']:>5} {row['value_ms']:>13.4f} {spread} {err}  {changed}"
    confirm = summary.get("confirm")
    if confirm and confirm.get("winner"):
        w = confirm["winner"]
        line = f"  confirmed over {confirm['rounds']} interleaved rounds: {w['median_ms']:.4f} ms"
        if confirm.get("default_ms"):
            line += (f" vs the default config's {confirm['default_ms']:.4f} ms in the same rounds "
                     f"({confirm['speedup_vs_default']:.2f}x)")
        yield line
    if summary.get("stop_reason"):
        yield "  " + summary["stop_reason"]
    if summary["predicted"]:
        yield "  times are PREDICTED by the performance model for the target GPU, not measured"


def comparison(summaries: list[dict[str, Any]]) -> Iterable[str]:
    """Kernels of one role tuned for one shape, side by side: which one the runtime will run."""
    def best(summary):
        confirm = summary.get("confirm") or {}
        winner = confirm.get("winner")
        if winner and winner.get("median_ms") is not None:
            return winner["median_ms"]
        return (summary.get("best") or {}).get("value_ms")
    timed = [(best(s), s["variant"]) for s in summaries if best(s) is not None]
    label = "predicted" if summaries[0]["predicted"] else "measured"
    shape = summaries[0]["shape"]
    yield f"{shape}: " + ", ".join(f"{v} {t:.4f} ms" for t, v in sorted(timed)) + f" ({label}, each study's best)"
    if timed:
        yield f"  the runtime runs {min(timed)[1]} for {shape} once these studies are exported (m2tune export)"
