"""The performance model on held-out data: every committed GPU study (bench/results/*/*.db) scored
by today's model and hardware profile, per (study): Spearman rank correlation of predicted against
measured time over its validated trials, the median error, where the measured best ranks, and the
measured time of the model's first pick against the measured best (issue 18's bar: Spearman >= 0.8,
the pick within 1.3x). Held out: the model's constants are fitted (m2tune calibrate) on calibration
problems, never on these users' shapes; each trial is predicted with the registers and shared
memory it compiled to. Runs on the CPU, no GPU:

    PYTHONPATH=. python3 bench/model_heldout.py OUT.json [RESULTS_DIR]

Trials of a kernel whose source has changed since (another variant_hash than today's) are still
scored: the model predicts today's code, the times are of the code then; the JSON says which. A lean
trial from before INLINE existed (no INLINE in its config) ran the block path, so it is priced as
INLINE=0, not as today's default. The backward grids (bench/results/*/bwd_grid*.json) are scored too,
per file and kernel.

"lean_refit": the lean backward has no calibrated constants of its own (it borrows bwd.py's, which
price none of its own features). Per shape, a refit on the lean measurements of the other shapes
only (studies and grids) scales the borrowed step and prices the lean's own features (scratch
transfers, INLINE's per-step reductions), and that shape's groups are scored with it: held out by
bucket, a check of the features, not the shipped model.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from m2tune import status, variants  # noqa: E402
from m2tune.model import perfmodel  # noqa: E402
from m2tune.model.fitting import median_ape, nnls, spearman  # noqa: E402
from m2tune.model.hardware import resolve_target  # noqa: E402
from m2tune.model.modelcheck import agreement  # noqa: E402
from m2tune.problem import KernelConfig, shape, shape_text  # noqa: E402
from m2tune.tuning.space_file import load_space  # noqa: E402
from m2tune.tuning.storage import open_storage  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LEAN = "m2rnn_bwd_lean"
FWD = "m2rnn_fwd"
# the lean features bwd.py's constants do not price: fitted per held-out shape in lean_refit
LEAN_OWN = ("lat.scratch", "lat.stepreduce", "thr.sm.scratch")


def as_ran(variant: str, config: dict) -> dict:
    """The config as the kernel ran it: a lean trial from before INLINE had only the block path."""
    if variant == LEAN and "INLINE" not in config:
        return {**config, "INLINE": 0}
    return config


def shape_name(identity: dict) -> str:
    """A name `shape()` reads: the study's own, or for a bucket of a space file (an all-bucket
    study, `k64-v16-b1-n132-s8192`) the bucket's problem as ad-hoc shape text."""
    name = identity["shape"]
    try:
        shape(name)
        return name
    except KeyError:
        buckets = {b.name: b.problem for b in load_space(identity["variant"]).buckets}
        if name not in buckets:
            raise
        return shape_text(buckets[name])


def study_rows(db: Path):
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(f"sqlite:///{db}", create=False)
    for summary in optuna.get_all_study_summaries(storage):
        attrs = summary.user_attrs
        identity = attrs.get("identity") or {}
        if identity.get("backend") != "gpu" or identity.get("variant") not in variants.names():
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        rows = [{"shape": shape_name(identity), "variant": identity["variant"],
                 "config": as_ran(identity["variant"], t.user_attrs["config"]),
                 "median_ms": t.value, "resources": t.user_attrs.get("resources")}
                for t in study.get_trials(deepcopy=False) if status.is_ok(t) and t.value < 1e8]
        yield summary.study_name, identity, attrs.get("variant_hash"), rows


def grid_rows(path: Path):
    """A backward grid's valid timed rows, per kernel (bench/h200_bwd_grid.py writes them)."""
    doc = json.loads(path.read_text())
    by_kernel: dict = {}
    for r in doc.get("rows", []):
        if r.get("status") == "ok" and r.get("valid") and r.get("bwd_ms") and r["kernel"] in variants.names():
            by_kernel.setdefault(r["kernel"], []).append(
                {"shape": doc["shape"], "variant": r["kernel"], "config": as_ran(r["kernel"], r["config"]),
                 "median_ms": r["bwd_ms"], "resources": r.get("resources")})
    for kernel, rows in by_kernel.items():
        yield f"grid:{kernel}/{doc['shape']}", {"shape": doc["shape"], "variant": kernel}, None, rows


def sources(results: Path):
    for db in sorted(results.glob("*/**/*.db")):
        for item in study_rows(db):
            yield db, item
    for grid in sorted(results.glob("*/**/bwd_grid*.json")):
        for item in grid_rows(grid):
            yield grid, item


def _lean_design(rows: list, hw) -> tuple[np.ndarray, np.ndarray, list]:
    """Per row: [the borrowed step (µs), the lean's own features], its measured step, its waves x S."""
    X, y, scale = [], [], []
    for r in rows:
        problem, config = shape(r["shape"]), KernelConfig.of(LEAN, r["config"])
        pred = perfmodel.predict(problem, config, hw, r.get("resources"))
        g = pred.geometry
        lat = variants.spec(LEAN).latency_features(problem, config, g)
        thr = variants.spec(LEAN).throughput_features(problem, config, g)
        own = {**{f"lat.{k}": v for k, v in lat.items()}, **{f"thr.{k}": v for k, v in thr.items()}}
        X.append([pred.step_us] + [own.get(k, 0.0) for k in LEAN_OWN])
        steps = g.waves * problem.S
        y.append(r["median_ms"] * 1e3 / steps)
        scale.append(steps)
    return np.array(X), np.array(y), scale


def _unique_rows(groups_rows: list) -> list:
    """Every group's rows, a trial copied into several folders counted once."""
    seen, pool = set(), []
    for _, _, rows in groups_rows:
        for r in rows:
            key = (r["shape"], json.dumps(r["config"], sort_keys=True))
            if key not in seen:
                seen.add(key)
                pool.append(r)
    return pool


def _held_out(label: str, name: str, rows: list, predicted: list, **fit) -> dict:
    """One held-out group's agreement (predicted ms against its rows' measured ones) and issue 18's bar."""
    measured = [r["median_ms"] for r in rows]
    best = int(np.argmin(measured))
    order = sorted(range(len(rows)), key=lambda i: predicted[i])
    entry = {"group": label, "study": name, "shape": rows[0]["shape"], "configs": len(rows), **fit,
             "spearman": spearman(predicted, measured), "median_ape": median_ape(predicted, measured),
             "best_predicted_rank": order.index(best) + 1, "top_pick_ratio": measured[order[0]] / measured[best]}
    entry["meets_bar"] = bool(entry["spearman"] >= 0.8 and entry["top_pick_ratio"] <= 1.3)
    return entry


def lean_refit(groups_rows: list, hw) -> list:
    """Each lean group scored with constants fitted on the lean rows of the other shapes only."""
    pool = _unique_rows(groups_rows)
    out = []
    for label, name, rows in groups_rows:
        train = [r for r in pool if r["shape"] != rows[0]["shape"]]
        if len(train) < 10:
            continue
        X, y, _ = _lean_design(train, hw)
        coef = nnls(X / y[:, None], np.ones(len(y)))         # relative error, as m2tune calibrate
        HX, _, steps = _lean_design(rows, hw)
        predicted = [float(v) * n / 1e3 for v, n in zip(HX @ coef, steps)]       # ms: the waves count
        entry = _held_out(label, name, rows, predicted, fitted_on=len(train),
                          fit=dict(zip(("borrowed_step_scale",) + LEAN_OWN, map(float, coef))))
        out.append(entry)
        print(f"refit {label:<52} {rows[0]['shape']:<11} n={len(rows):<3} spearman={entry['spearman']:+.3f} "
              f"MdAPE={entry['median_ape']:5.1f}%  pick {entry['top_pick_ratio']:.2f}x  (fit on {len(train)})",
              flush=True)
    return out


def forward_refit(groups_rows: list, hw) -> list:
    """Each forward bucket scored with constants refitted (calibrate.fit_constants) on the calibration
    rows plus the measured trials of the other buckets only: held out by bucket, what fitting the
    model on users' shapes would buy (the shipped constants saw calibration problems alone)."""
    from dataclasses import replace
    from m2tune.model.calibrate import _problem_dict, fit_constants
    pool = _unique_rows(groups_rows)
    calibration = [r for r in hw.raw.get(FWD, []) if "median_ms" in r]
    out = []
    for label, name, rows in groups_rows:
        held = rows[0]["shape"]
        train = calibration + [{"variant": FWD, "config": r["config"], "problem": _problem_dict(shape(r["shape"])),
                                "median_ms": r["median_ms"], "resources": r.get("resources"), "regime": "latency"}
                               for r in pool if r["shape"] != held]
        constants, _ = fit_constants(train, hw, FWD)
        probe = replace(hw, constants={**hw.constants, FWD: constants})
        predicted = [perfmodel.predict(shape(held), KernelConfig.of(FWD, r["config"]), probe, r.get("resources")).time_ms
                     for r in rows]
        entry = _held_out(label, name, rows, predicted, fitted_on=len(train) - len(calibration),
                          calibration_rows=len(calibration))
        out.append(entry)
        print(f"fwd refit {label:<48} {held:<11} n={len(rows):<3} spearman={entry['spearman']:+.3f} "
              f"MdAPE={entry['median_ape']:5.1f}%  pick {entry['top_pick_ratio']:.2f}x  "
              f"(fit on {entry['fitted_on']} + {len(calibration)} calibration)", flush=True)
    return out


def main(out: str, results: str = str(ROOT / "bench" / "results")) -> None:
    hw = resolve_target("nvidia-h200", [ROOT / "profiles"])
    groups, lean_groups, fwd_groups = [], [], []
    for db, (name, identity, code_hash, rows) in sources(Path(results)):
        if len(rows) < 5:
            continue
        try:
            (a,) = agreement(rows, hw)
        except Exception as exc:              # a study the model cannot score (say, a retired shape)
            groups.append({"db": str(db.relative_to(ROOT)), "study": name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        groups.append({"db": str(db.relative_to(ROOT)), "study": name, **a.__dict__, "first_ms": rows[0]["median_ms"],
                       "same_code_as_today": code_hash == variants.source_hash(identity["variant"]),
                       "meets_bar": a.spearman >= 0.8 and a.top_pick_ratio <= 1.3})
        print(f"{str(db.relative_to(ROOT / 'bench' / 'results')):<52} {a.line()}", flush=True)
        if identity["variant"] == LEAN:
            lean_groups.append((groups[-1], rows))
        if identity["variant"] == FWD:
            fwd_groups.append((groups[-1], rows))
    # a study copied into several result folders (resumed, shipped) counts once: its fullest copy
    fullest: dict = {}
    for g in groups:
        if "spearman" in g:
            key = (g["study"], g["first_ms"])          # copies share their first trials; fresh studies do not
            if key not in fullest or g["configs"] > fullest[key]["configs"]:
                fullest[key] = g
    for g in groups:
        g["counted"] = fullest.get((g["study"], g.get("first_ms"))) is g
    scored = [g for g in groups if g.get("counted")]
    refit = lean_refit([(g["db"].split("bench/results/")[-1], g["study"], rows)
                        for g, rows in lean_groups if g.get("counted")], hw)
    fwd = forward_refit([(g["db"].split("bench/results/")[-1], g["study"], rows)
                         for g, rows in fwd_groups if g.get("counted")], hw)
    with open(out, "w") as fh:
        json.dump({"hardware": hw.slug, "groups": groups, "forward_refit": fwd,
                   "forward_refit_meets_bar": sum(e["meets_bar"] for e in fwd),
                   "meets_bar": sum(g["meets_bar"] for g in scored), "scored": len(scored),
                   "lean_refit": refit, "lean_refit_meets_bar": sum(e["meets_bar"] for e in refit)}, fh, indent=2)
    print(f"{sum(g['meets_bar'] for g in scored)} of {len(scored)} studies (copies counted once) meet "
          "Spearman >= 0.8 and pick <= 1.3x")
    print(f"forward refit, held out by bucket: {sum(e['meets_bar'] for e in fwd)} of {len(fwd)} forward groups meet it")
    print(f"lean refit, held out by shape: {sum(e['meets_bar'] for e in refit)} of {len(refit)} lean groups meet it")


if __name__ == "__main__":
    main(*sys.argv[1:])
