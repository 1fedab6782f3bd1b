"""Which kernel config runs a problem on this GPU: tuned profiles first, a safe default last.

Search order, first usable file wins per folder order:
  1. the folders in the environment variable M2TUNE_PROFILES (os.pathsep-separated), read at
     lookup time: a user's own tuned files override the shipped ones;
  2. the bundled `profiles/` (m2tune.profiles in an installed package).
In each folder the file is `<gpu-slug>/<kernel>.json` (m2tune/profile_file.py).

A file is skipped, with one warning per file and process, when it is unreadable or malformed, of
another schema, for another GPU, or stale: tuned for other kernel code (variant hash). A file tuned
with another Triton version is used, with one notice per file and process (the source is the same;
`m2tune check` warns, `--strict` fails). Never an exception: a training job must start.

Within the usable files an entry is chosen by, in order: exact bucket before nearest; measured
before predicted; then the smallest distance (DISTANCE below). A chosen config must pass the
kernel's check() for the actual problem, and its validation must have covered every path the call
takes (h0, packed sequences, clipping, several chunks: m2tune/coverage.py); if none does, the
default: the first of the kernel's
default ladder (its spec: the hand-picked GPU start, fp32-accurate tf32x3 products measured on the
H200, then the kernel's own default) that fits the problem.

Lookups are cached per process (`clear_cache()` forgets them). This module imports neither
optuna, pandas nor plotly.
"""
from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from . import coverage, variants
from .gpu import canonical_gpu
from .problem import KernelConfig, Problem
from .profile_file import Entry, ProfileFileError, bucket_of, load

ENV_OVERRIDE = "M2TUNE_PROFILES"
log = logging.getLogger("m2tune.runtime")


def search_folders() -> tuple[Path, ...]:
    from .resources import data_dir
    extra = [Path(p) for p in os.environ.get(ENV_OVERRIDE, "").split(os.pathsep) if p]
    return (*extra, data_dir("profiles"))


# ---- distance between a problem and a tuned bucket -------------------------------------------

def _sharing(p: Problem | dict) -> tuple[str, ...]:
    heads = [p[h] if isinstance(p, dict) else getattr(p, h) for h in ("Nq", "Nk", "Nv", "Nw", "Nf")]
    n = max(heads)
    return tuple("all" if c == n else "one" if c == 1 else "some" for c in heads)


def distance(problem: Problem, bucket: dict) -> Optional[float]:
    """How far a tuned bucket is from a problem; None when it must not be used at all.

    DISTANCE = 4 |log2 K/K'| + 4 |log2 V/V'|        (tile shapes and registers change with these)
             + |log2 (B N)/(B' N')|                  (programs: occupancy and waves)
             + 0.5 |log2 S/S'|                        (per-step cost barely depends on S)
             + 2 if the head sharing differs         (which gradients need atomics)
    Another dtype is not a neighbour: products and tolerances differ.
    """
    if problem.dtype != bucket["dtype"]:
        return None
    lg = lambda a, b: abs(math.log2(a / b))  # noqa: E731
    bn = problem.B * problem.N
    bn_bucket = bucket["B"] * max(bucket[h] for h in ("Nq", "Nk", "Nv", "Nw", "Nf"))
    d = 4 * lg(problem.K, bucket["K"]) + 4 * lg(problem.V, bucket["V"]) + lg(bn, bn_bucket)
    d += 0.5 * lg(problem.S, bucket["S"])
    return d + (2.0 if _sharing(problem) != _sharing(bucket) else 0.0)


# ---- the lookup ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Choice:
    kernel: str                    # "reference": no Triton kernel runs (the PyTorch reference does)
    config: Optional[KernelConfig]   # None for the reference
    source: str                    # the file it came from, or "default"
    reason: str                    # "exact bucket paper-7b", "nearest bucket ...", "default: ..."
    gpu: Optional[str]
    bucket: Optional[str] = None
    distance: Optional[float] = None
    measured: Optional[bool] = None
    skipped: tuple[str, ...] = ()  # files not used, each with why
    exact: bool = False            # the entry's bucket is the problem's own
    time_ms: Optional[float] = None    # the entry's tuned time (measured or predicted)

    @property
    def tuned(self) -> bool:
        return self.source != "default"

    def describe(self) -> str:
        if self.config is None:
            return f"{self.kernel}: {self.reason}"
        kind = "" if self.measured is None else (" (measured)" if self.measured else " (PREDICTED by the model)")
        return f"{self.kernel}: {self.reason}{kind}; {self.config.short()} [from {self.source}]"


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def fit_to_problem(config: KernelConfig, problem: Problem) -> KernelConfig:
    """Shrink blocks and chunks that would exceed the problem (the kernel's spec says which)."""
    return variants.spec(config.variant).fit(config, problem)


def default_choice(kernel: str, problem: Problem, *, gpu: Optional[str], interpreter: bool,
                   why: str, skipped: tuple[str, ...] = ()) -> Choice:
    """The first config of the kernel's default ladder (spec.ladder) that check() accepts for
    `problem`, each start tried with 1, 2, 4, 8 warps: wide V (64) needs more threads to hold the
    state tiles."""
    spec = variants.spec(kernel)
    reasons = []
    for start in spec.ladder(interpreter=interpreter):
        for warps in (start["num_warps"], 2, 4, 8):
            config = spec.fit(start.with_params(num_warps=warps), problem)
            reason = spec.check(problem, config, interpreter=interpreter)
            if reason is None:
                return Choice(kernel, config, "default", f"default: {why}", gpu, skipped=skipped)
            reasons.append(reason)
    raise ValueError(f"m2rnn: no default {kernel} config fits {problem.describe()}: {'; '.join(dict.fromkeys(reasons))}")


def triton_notice(tuned: object, running: str) -> str:
    return (f"tuned with Triton {tuned}, running {running}: used as tuned; `m2tune tune` on this "
            "Triton (it resumes the study) re-confirms the times")


def _usable(path: Path, kernel: str, gpu: str) -> tuple[Optional[Any], Optional[str]]:
    """(the parsed file, None) or (None, why it is skipped)."""
    import triton
    try:
        pf = load(path, strict=False)
    except ProfileFileError as exc:
        return None, str(exc)
    if pf.kernel != kernel:
        return None, f"{path}: holds kernel {pf.kernel!r}, not {kernel!r}"
    if canonical_gpu(str(pf.gpu.get("slug") or pf.gpu.get("name", ""))) != gpu:
        return None, f"{path}: tuned for GPU {pf.gpu.get('name')!r}, this is {gpu!r}"
    if pf.versions.get("triton") != triton.__version__:
        # the kernel source is the same (hash below), the compiler is not: use it, and say so once
        _warn_once(f"m2tune: {path}: {triton_notice(pf.versions.get('triton'), triton.__version__)}")
    if pf.variant_hash != variants.source_hash(kernel):
        return None, f"{path}: stale, tuned for other {kernel} source (variant hash {pf.variant_hash})"
    return pf, None


def lookup(kernel: str, problem: Problem, *, gpu: Optional[str] = None, interpreter: bool = False,
           training: bool = False, clipping: bool = False, warn_untuned: bool = True) -> Choice:
    """The config for `kernel` on `problem` on GPU `gpu` (a name or slug; None: no GPU, default).

    training: gradients will be taken, so entries the kernel's spec refuses for training (a forward
    whose products round the state its checkpoints hold) are passed over, each with the reason in
    Choice.skipped, unless the entry carries a `training` config. clipping: the backward clamps
    state gradients (gradient_clipping). Entries whose validation did not cover a path the call
    takes are passed over the same way.
    """
    return _lookup(kernel, problem, canonical_gpu(gpu) if gpu else None, interpreter, training,
                   search_folders(), warn_untuned, clipping)


@functools.lru_cache(maxsize=256)
def _lookup(kernel: str, problem: Problem, gpu: Optional[str], interpreter: bool, training: bool,
            folders: tuple[Path, ...], warn_untuned: bool = True, clipping: bool = False) -> Choice:
    if gpu is None or interpreter:
        return default_choice(kernel, problem, gpu=gpu, interpreter=interpreter,
                              why="no GPU (Triton interpreter)" if interpreter else "no GPU")
    spec = variants.spec(kernel)
    need = coverage.needed(spec.role, problem, training=training, clipping=clipping)
    skipped: list[str] = []
    ranked: list[tuple[tuple, Entry, str]] = []
    for order, folder in enumerate(folders):
        path = folder / gpu / f"{kernel}.json"
        if not path.is_file():
            continue
        try:
            pf, why = _usable(path, kernel, gpu)
        except Exception as exc:          # never an exception: load() is strict, this is the last guard
            pf, why = None, f"{path}: unusable ({type(exc).__name__}: {exc})"
        if pf is None:
            _warn_once(f"m2tune: skipping {why}")
            skipped.append(why)
            continue
        for why in pf.rejected:
            _warn_once(f"m2tune: skipping an entry: {why}")
            skipped.append(why)
        for entry in pf.entries:
            d = distance(problem, entry.bucket)
            if d is None:
                continue
            exact = entry.bucket == bucket_of(problem)
            ranked.append(((not exact, not entry.measured, round(d, 9), order), entry, str(path)))
    for _, entry, path in sorted(ranked, key=lambda r: r[0]):
        config = spec.config(entry.config)
        why = spec.check(problem, config)
        if why:
            skipped.append(f"{path}: bucket {entry.name or entry.bucket} does not fit this problem: {why}")
            continue
        why = spec.training_reason(config) if training else None
        role = ""
        record = entry.raw
        training_params = (entry.raw.get("training") or {}).get("config") if why else None
        if isinstance(training_params, dict):
            # the same study's fastest config whose checkpoints are accurate (m2tune export)
            config = spec.config(training_params)
            why = spec.check(problem, config) or spec.training_reason(config)
            role, record = ", training entry", entry.raw["training"]
        failed = coverage.failure(record.get("validated"))
        if not why and failed:
            why = f"its validation failed ({failed[:120]})"
        if not why:
            gaps = coverage.missing(record.get("validated"), role=spec.role, measured=entry.measured, need=need)
            if gaps:
                why = (f"its validation did not cover {', '.join(gaps)}, which this call takes "
                       "(m2tune check --revalidate)")
        if why:
            skipped.append(f"{path}: bucket {entry.name or entry.bucket}{role}: {why}")
            continue
        d = distance(problem, entry.bucket)
        exact = d == 0 and entry.bucket == bucket_of(problem)
        reason = f"exact bucket {entry.name}{role}" if exact else f"nearest bucket {entry.name}{role} (distance {d:.2f})"
        time_ms = (entry.raw.get("training") or {}).get("time_ms") if role else entry.time_ms
        return Choice(kernel, config, path, reason, gpu, entry.name, d, entry.measured, tuple(skipped),
                      exact, time_ms)
    why = f"no tuned {kernel} config for {gpu}" + (" usable here" if ranked or skipped else "")
    if not ranked and not skipped and warn_untuned:
        _warn_once(f"m2tune: no tuned {kernel} profile for GPU {gpu!r} in {[str(f) for f in folders]}; "
                   "using the default config (m2tune tune + m2tune export make one)")
    return default_choice(kernel, problem, gpu=gpu, interpreter=False, why=why, skipped=tuple(skipped))


def choose(role: str, problem: Problem, *, gpu: Optional[str] = None, interpreter: bool = False,
           training: bool = False, clipping: bool = False) -> Choice:
    """What the op runs for `role` ("forward" or "backward"): lookup() of every kernel serving the
    role (variants.for_role), the best tuned one (exact bucket first, then measured, nearer, and the
    faster tuned time), else the first kernel's default."""
    # a role's first kernel warns when nothing is tuned for this GPU; the others are alternatives,
    # passed over where they cannot run the problem at all (no config of theirs fits it)
    choices, failures = [], []
    for i, kernel in enumerate(variants.for_role(role)):
        try:
            choices.append(lookup(kernel, problem, gpu=gpu, interpreter=interpreter, training=training,
                                  clipping=clipping, warn_untuned=i == 0))
        except ValueError as exc:
            failures.append(exc)
    if not choices:
        if failures:
            raise failures[0]
        raise ValueError(f"m2rnn: no kernel is registered for the {role}")
    tuned = [c for c in choices if c.tuned]
    if not tuned:
        return choices[0]
    return min(tuned, key=lambda c: (not c.exact, not c.measured, round(c.distance or 0.0, 9),
                                     c.time_ms if c.time_ms is not None else math.inf))


def clear_cache() -> None:
    _lookup.cache_clear()
    _warned.clear()
