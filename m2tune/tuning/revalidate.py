"""`m2tune check --revalidate`: prove shipped entries right on today's validation plan.

Every entry of a profile file (and its training config) goes through the tuner's own trial path
(trial.py, in a worker process: a crash or a hang is that entry's result, not the command's) on
the validation plan of measure/plan.py, on the GPU or in the Triton interpreter. The file is
rewritten after each entry with the entry's `validated` record: the plan, where it ran, the paths
it covered, and `failed` with the reason when the config was wrong. The runtime then uses each
entry only for the calls its record covers (coverage.py); a failed entry for none.

In the interpreter PTX tanh.approx cannot run: such configs are checked with the exact tanh, and
the record says so (`as`). A GPU revalidation also re-times the entry (recorded as `retimed_ms`;
the tuned time is left as it was).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Iterator, Mapping, Optional

from .. import status, variants
from ..problem import KernelConfig
from ..profile_file import ProfileFile, dumps, load
from .trial import GPU, INTERPRET, TrialRequest, interpretable
from .worker import Worker


@dataclass
class Revalidated:
    path: Path
    bucket: str
    part: str                    # "config" or "training"
    ok: bool
    record: dict

    def line(self) -> str:
        where = self.record.get("where", "?")
        if self.record.get("unvalidated"):
            return (f"{self.path.parent.name}/{self.path.name} {self.bucket} {self.part}: not validated "
                    f"({where}): {self.record['unvalidated']}")
        if self.ok:
            return (f"{self.path.parent.name}/{self.path.name} {self.bucket} {self.part}: ok on plan "
                    f"v{self.record.get('plan')} ({where}: {', '.join(self.record.get('paths', []))})")
        return f"{self.path.parent.name}/{self.path.name} {self.bucket} {self.part}: FAILED ({where}): {self.record.get('failed')}"


def _request(kernel: str, entry_problem, config: KernelConfig, *, mode: str, device: Optional[int],
             seed: int, extra_variants: Mapping[str, tuple[str, str]]) -> tuple[TrialRequest, Optional[str]]:
    checked, note = interpretable(config) if mode == INTERPRET else (config, None)
    return TrialRequest(kernel, entry_problem, checked, mode=mode, device=device, seed=seed,
                        extra_variants=dict(extra_variants)), note


def _parts(raw: dict) -> Iterator[tuple[str, dict]]:
    yield "config", raw
    if isinstance(raw.get("training"), dict):
        yield "training", raw["training"]


def revalidate_file(path: Path, *, gpu: bool, device: int = 0, seed: int = 0, timeout_s: float = 180.0,
                    report: Callable[[Revalidated], None] = lambda r: None,
                    extra_variants: Mapping[str, tuple[str, str]] = MappingProxyType({})) -> list[Revalidated]:
    """Revalidate every entry of one file in place; the results, one per entry and part.
    extra_variants: kernels outside the registry (name -> (spec "module:ATTR", kernel module))."""
    from ..measure.plan import plan_for
    path = Path(path)
    pf: ProfileFile = load(path)
    doc = json.loads(path.read_text())
    mode = GPU if gpu else INTERPRET
    worker = Worker(device if gpu else None, mode)
    results = []
    try:
        for i, entry in enumerate(pf.entries):
            raw = doc["entries"][i]
            for part, holder in _parts(raw):
                config = KernelConfig.of(pf.kernel, variants.spec(pf.kernel).config(holder["config"]).as_dict())
                request, note = _request(pf.kernel, entry.problem(), config, mode=mode,
                                         device=device if gpu else None, seed=seed + i,
                                         extra_variants=extra_variants)
                plan = plan_for(pf.kernel, request.problem, request.config, interpreter=not gpu)
                result = worker.run(request, plan.time_limit(timeout_s))
                record = {k: v for k, v in (result.validated or plan.record()).items() if k != "notes"}
                if note:
                    record["as"] = note
                if result.status == status.INVALID_CONFIG:
                    # it cannot run the plan's problems here: unproven, not wrong (covers nothing)
                    record.update(paths=[], unvalidated=result.message)
                elif not result.ok:
                    record.update(paths=[], failed=f"{result.status}: {result.message}")
                if gpu and result.median_ms is not None:
                    record["retimed_ms"] = round(result.median_ms, 4)
                holder["validated"] = record
                path.write_text(dumps(pf.kernel, doc["gpu"], doc["versions"], doc["variant_hash"], doc["entries"]))
                done = Revalidated(path, entry.name or str(entry.bucket), part,
                                   result.ok or result.status == status.INVALID_CONFIG, record)
                results.append(done)
                report(done)
    finally:
        worker.close()
    return results


def revalidate_folder(folder: Path, **kw) -> list[Revalidated]:
    out = []
    for path in sorted(Path(folder).glob("*/*.json")):
        if path.name == "hardware.json":
            continue
        out += revalidate_file(path, **kw)
    return out
