"""How well the performance model ranks and predicts measured configs.

Input: measured rows (shape, variant, config, median_ms and the compiled kernel's resources),
as `bench/h200_model_accuracy.py` writes them to CSV. Output per (shape, variant): Spearman
rank correlation of predicted against measured time, median absolute percentage error, and
whether the measured best config is among the model's top 5.
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from . import perfmodel
from .fitting import median_ape, spearman
from .hardware import HardwareProfile
from ..problem import KernelConfig, shape

CSV_FIELDS = ("shape", "variant", "config", "median_ms", "p20_ms", "p80_ms", "n_regs", "n_spills",
              "shared", "error")


@dataclass(frozen=True)
class Agreement:
    shape: str
    variant: str
    configs: int
    spearman: float
    median_ape: float            # %
    best_in_top5: bool
    best_measured_ms: float
    best_predicted_rank: int     # 1-based rank of the measured best in the model's order
    top_pick_ratio: float = float("nan")   # measured time of the model's first pick / the measured best

    def line(self) -> str:
        return (f"{self.shape:<11} {self.variant:<10} n={self.configs:<3} spearman={self.spearman:+.3f} "
                f"MdAPE={self.median_ape:5.1f}%  measured best {self.best_measured_ms:.3f} ms is model "
                f"rank {self.best_predicted_rank} ({'in' if self.best_in_top5 else 'NOT in'} top 5), "
                f"the model's pick {self.top_pick_ratio:.2f}x the best")


def write_csv(rows: Iterable[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            out = {k: row.get(k, "") for k in CSV_FIELDS}
            out["config"] = json.dumps(row["config"], sort_keys=True)
            writer.writerow(out)


def read_csv(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, newline="") as fh:
        for rec in csv.DictReader(fh):
            row: dict[str, Any] = {"shape": rec["shape"], "variant": rec["variant"],
                                   "config": json.loads(rec["config"]), "error": rec["error"]}
            for key in ("median_ms", "p20_ms", "p80_ms"):
                row[key] = float(rec[key]) if rec[key] else None
            row["resources"] = ({k: int(rec[k]) for k in ("n_regs", "n_spills", "shared")}
                                if rec["n_regs"] else None)
            rows.append(row)
    return rows


def agreement(rows: list[dict[str, Any]], hw: HardwareProfile) -> list[Agreement]:
    groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for row in rows:
        if row.get("median_ms") is None:
            continue
        problem = shape(row["shape"])
        config = KernelConfig.of(row["variant"], row["config"])
        pred = perfmodel.predict(problem, config, hw, row.get("resources")).time_ms
        groups.setdefault((row["shape"], row["variant"]), []).append((pred, row["median_ms"]))
    out = []
    for (shape_name, variant), pairs in sorted(groups.items()):
        predicted = [p for p, _ in pairs]
        measured = [m for _, m in pairs]
        best = min(range(len(pairs)), key=lambda i: measured[i])
        order = sorted(range(len(pairs)), key=lambda i: predicted[i])
        rank = order.index(best) + 1
        out.append(Agreement(shape_name, variant, len(pairs), spearman(predicted, measured),
                             median_ape(predicted, measured), rank <= 5, measured[best], rank,
                             measured[order[0]] / measured[best]))
    return out


def as_dicts(result: list[Agreement]) -> list[dict[str, Any]]:
    return [asdict(a) for a in result]
