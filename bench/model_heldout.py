"""The performance model on held-out data: every committed GPU study (bench/results/*/*.db) scored
by today's model and hardware profile, per (study): Spearman rank correlation of predicted against
measured time over its validated trials, the median error, where the measured best ranks, and the
measured time of the model's first pick against the measured best (issue 18's bar: Spearman >= 0.8,
the pick within 1.3x). Held out: the model's constants are fitted (m2tune calibrate) on calibration
problems, never on these users' shapes; each trial is predicted with the registers and shared
memory it compiled to. Runs on the CPU, no GPU:

    PYTHONPATH=. python3 bench/model_heldout.py OUT.json [RESULTS_DIR]

Trials of a kernel whose source has changed since (another variant_hash than today's) are still
scored: the model predicts today's code, the times are of the code then; the JSON says which.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from m2tune import status, variants  # noqa: E402
from m2tune.model.hardware import resolve_target  # noqa: E402
from m2tune.model.modelcheck import agreement  # noqa: E402
from m2tune.tuning.storage import open_storage  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


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
        rows = [{"shape": identity["shape"], "variant": identity["variant"], "config": t.user_attrs["config"],
                 "median_ms": t.value, "resources": t.user_attrs.get("resources")}
                for t in study.get_trials(deepcopy=False) if status.is_ok(t) and t.value < 1e8]
        yield summary.study_name, identity, attrs.get("variant_hash"), rows


def main(out: str, results: str = str(ROOT / "bench" / "results")) -> None:
    hw = resolve_target("nvidia-h200", [ROOT / "profiles"])
    groups = []
    for db in sorted(Path(results).glob("*/**/*.db")):
        for name, identity, code_hash, rows in study_rows(db):
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
    with open(out, "w") as fh:
        json.dump({"hardware": hw.slug, "groups": groups,
                   "meets_bar": sum(g["meets_bar"] for g in scored), "scored": len(scored)}, fh, indent=2)
    print(f"{sum(g['meets_bar'] for g in scored)} of {len(scored)} studies (copies counted once) meet "
          "Spearman >= 0.8 and pick <= 1.3x")


if __name__ == "__main__":
    main(*sys.argv[1:])
