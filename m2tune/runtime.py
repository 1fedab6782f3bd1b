"""Which kernel config runs a problem on this GPU: tuned profiles first, a safe default last.

Search order, first usable file wins per folder order:
  1. the folders in the environment variable M2TUNE_PROFILES (os.pathsep-separated), read at
     lookup time: a user's own tuned files override the shipped ones;
  2. the bundled `profiles/` (m2tune.profiles in an installed package).
In each folder the file is `<gpu-slug>/<kernel>.json` (m2tune/profile_file.py).

A file is skipped, with one warning per file and process, when it is unreadable or malformed, of
another schema, for another GPU, or stale: tuned with another Triton version or another template
source (variant hash). Never an exception: a training job must start.

Within the usable files an entry is chosen by, in order: exact bucket before nearest; measured
before predicted; then the smallest distance (DISTANCE below). A chosen config must pass the
template's check() for the actual problem; if none does, the default: the hand-picked starting
point for GPUs (fp32-accurate tf32x3 products, measured on the H200), shrunk to the problem and
checked, else the template's own default.

Lookups are cached per process (`clear_cache()` forgets them). This module imports neither
optuna, pandas nor plotly.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from . import variants
from .gpu import slug as _slug
from .problem import KernelConfig, Problem
from .profile_file import Entry, ProfileFileError, bucket_of, load

ENV_OVERRIDE = "M2TUNE_PROFILES"
log = logging.getLogger("m2tune.runtime")

# Marketing names and board variants of one chip share tuned configs. Keys are slugs of what the
# driver reports; values the folder name under profiles/.
ALIASES = {
    "nvidia-h200-nvl": "nvidia-h200",
    "nvidia-h200-141gb-hbm3e": "nvidia-h200",
    "nvidia-h100-80gb-hbm3": "nvidia-h100",
    "nvidia-h100-nvl": "nvidia-h100",
    "nvidia-h100-pcie": "nvidia-h100",
    "nvidia-h100-sxm5-80gb": "nvidia-h100",
    "nvidia-a100-sxm4-80gb": "nvidia-a100",
    "nvidia-a100-sxm4-40gb": "nvidia-a100",
    "nvidia-a100-80gb-pcie": "nvidia-a100",
    "nvidia-a100-pcie-40gb": "nvidia-a100",
    "nvidia-gh200-480gb": "nvidia-gh200",
}
# board suffixes the table does not list: form factor, memory size and type
_SUFFIX = re.compile(r"-(sxm\d?|pcie|nvl|\d+gb|hbm\d?e?)$")

# Starting points on a GPU when nothing is tuned: the fastest fp32-accurate configs measured on the
# H200 (bench/results/2026-11-29-h200-forward-tf32x3, -training-levers).
GPU_DEFAULTS = {
    "m2rnn_fwd": {"MATMUL": "dot_tf32x3", "TANH": "approx", "BLOCK_K": 32, "num_warps": 1},
    "m2rnn_bwd": {"MATMUL": "dot_tf32x3", "TANH": "approx", "BLOCK_K": 16, "num_warps": 1,
                  "DW_MATMUL": "dot_tf32"},
}


# Forward products that round the state H to bf16 or tf32 at every step. Fine for y (the forward's
# validation passes them), but in training the forward also writes the checkpoints the backward
# recomputes from, and gradients are far more sensitive to the state than y is: at paper-7b, S=512,
# no clipping, a dot_bf16 forward put every gradient 2.5x off float64 whichever backward followed,
# while a dot_tf32x3 forward kept them within 1e-2 (bench/results/2026-11-29-h200-pairs).
STATE_ROUNDING = ("dot_bf16", "dot_tf32")


def canonical_gpu(name: str) -> str:
    """'NVIDIA H200 NVL' -> 'nvidia-h200'; a name already in slug form passes through."""
    s = _slug(name)
    while s not in ALIASES:
        shorter = _SUFFIX.sub("", s)
        if shorter == s:
            break
        s = shorter
    return ALIASES.get(s, s)


def current_gpu(device: Any = None) -> Optional[str]:
    """Canonical slug of the CUDA device (current one by default), None without CUDA."""
    import torch
    if not torch.cuda.is_available():
        return None
    return canonical_gpu(torch.cuda.get_device_name(device))


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
    kernel: str
    config: KernelConfig
    source: str                    # the file it came from, or "default"
    reason: str                    # "exact bucket paper-7b", "nearest bucket ...", "default: ..."
    gpu: Optional[str]
    bucket: Optional[str] = None
    distance: Optional[float] = None
    measured: Optional[bool] = None
    skipped: tuple[str, ...] = ()  # files not used, each with why

    def describe(self) -> str:
        kind = "" if self.measured is None else (" (measured)" if self.measured else " (PREDICTED by the model)")
        return f"{self.kernel}: {self.reason}{kind}; {self.config.short()} [from {self.source}]"


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def fit_to_problem(config: KernelConfig, problem: Problem) -> KernelConfig:
    """Shrink blocks and chunks that would exceed the problem (K rows, sequences, length)."""
    cap = lambda n: 1 << max(0, (n - 1).bit_length())  # noqa: E731  (next power of two)
    fitted = config.with_params(BLOCK_K=min(config["BLOCK_K"], cap(problem.K)),
                                BLOCK_B=min(config["BLOCK_B"], cap(problem.B)))
    if "CKPT" in config.as_dict():
        choices = sorted(variants.load(config.variant).PARAMS["CKPT"])
        fitting = [c for c in choices if c >= problem.S] or [choices[-1]]
        fitted = fitted.with_params(CKPT=min(config["CKPT"], fitting[0]))
    return fitted


def default_choice(kernel: str, problem: Problem, *, gpu: Optional[str], interpreter: bool,
                   why: str, skipped: tuple[str, ...] = ()) -> Choice:
    """The first config of the default ladder that check() accepts for `problem`.

    Ladder: the GPU starting point (not in the interpreter: PTX tanh; then with an exact dW product,
    which fp32 problems need), the template's own default, and that with exact tensor-core
    products, each with 1, 2, 4, 8 warps: wide V (64) needs more threads to hold the state tiles.
    """
    module = variants.load(kernel)
    gpu_start = module.DEFAULT.with_params(**GPU_DEFAULTS[kernel])
    exact_dw = gpu_start.with_params(DW_MATMUL="same") if "DW_MATMUL" in GPU_DEFAULTS[kernel] else gpu_start
    starts = ([] if interpreter else [gpu_start, exact_dw]) + [   # exact dW: fp32 problems refuse tf32
        module.DEFAULT, module.DEFAULT.with_params(MATMUL="dot_ieee")]
    reasons = []
    for start in starts:
        for warps in (start["num_warps"], 2, 4, 8):
            config = fit_to_problem(start.with_params(num_warps=warps), problem)
            reason = module.check(problem, config, interpreter=interpreter)
            if reason is None:
                return Choice(kernel, config, "default", f"default: {why}", gpu, skipped=skipped)
            reasons.append(reason)
    raise ValueError(f"m2rnn: no default {kernel} config fits {problem.describe()}: {'; '.join(dict.fromkeys(reasons))}")


def _usable(path: Path, kernel: str, gpu: str) -> tuple[Optional[Any], Optional[str]]:
    """(the parsed file, None) or (None, why it is skipped)."""
    import triton
    try:
        pf = load(path)
    except ProfileFileError as exc:
        return None, str(exc)
    if pf.kernel != kernel:
        return None, f"{path}: holds kernel {pf.kernel!r}, not {kernel!r}"
    if canonical_gpu(str(pf.gpu.get("slug") or pf.gpu.get("name", ""))) != gpu:
        return None, f"{path}: tuned for GPU {pf.gpu.get('name')!r}, this is {gpu!r}"
    if pf.versions.get("triton") != triton.__version__:
        return None, (f"{path}: stale, tuned with Triton {pf.versions.get('triton')}, "
                      f"this is Triton {triton.__version__}")
    if pf.variant_hash != variants.source_hash(kernel):
        return None, f"{path}: stale, tuned for other {kernel} source (variant hash {pf.variant_hash})"
    return pf, None


def lookup(kernel: str, problem: Problem, *, gpu: Optional[str] = None, interpreter: bool = False,
           training: bool = False) -> Choice:
    """The config for `kernel` on `problem` on GPU `gpu` (a name or slug; None: no GPU, default).

    training: the forward's checkpoints feed a backward, so forward entries whose products round
    the state (STATE_ROUNDING) are passed over, each with the reason in Choice.skipped.
    """
    return _lookup(kernel, problem, canonical_gpu(gpu) if gpu else None, interpreter, training,
                   search_folders())


def training_reason(kernel: str, config: KernelConfig) -> Optional[str]:
    """Why `config` must not make checkpoints for a backward (None if it may)."""
    if kernel == "m2rnn_fwd" and config["MATMUL"] in STATE_ROUNDING:
        return (f"MATMUL={config['MATMUL']} rounds the state that the backward's checkpoints hold "
                "(gradients 2.5x off at S=512); not used for training")
    return None


@functools.lru_cache(maxsize=256)
def _lookup(kernel: str, problem: Problem, gpu: Optional[str], interpreter: bool, training: bool,
            folders: tuple[Path, ...]) -> Choice:
    if gpu is None or interpreter:
        return default_choice(kernel, problem, gpu=gpu, interpreter=interpreter,
                              why="no GPU (Triton interpreter)" if interpreter else "no GPU")
    module = variants.load(kernel)
    skipped: list[str] = []
    ranked: list[tuple[tuple, Entry, str]] = []
    for order, folder in enumerate(folders):
        path = folder / gpu / f"{kernel}.json"
        if not path.is_file():
            continue
        pf, why = _usable(path, kernel, gpu)
        if pf is None:
            _warn_once(f"m2tune: skipping {why}")
            skipped.append(why)
            continue
        for entry in pf.entries:
            d = distance(problem, entry.bucket)
            if d is None:
                continue
            exact = entry.bucket == bucket_of(problem)
            ranked.append(((not exact, not entry.measured, round(d, 9), order), entry, str(path)))
    for _, entry, path in sorted(ranked, key=lambda r: r[0]):
        config = KernelConfig.of(kernel, {**module.DEFAULT.as_dict(), **entry.config})
        why = module.check(problem, config)
        if why:
            skipped.append(f"{path}: bucket {entry.name or entry.bucket} does not fit this problem: {why}")
            continue
        why = training_reason(kernel, config) if training else None
        role = ""
        training_params = (entry.raw.get("training") or {}).get("config") if why else None
        if isinstance(training_params, dict):
            # the same study's fastest config whose checkpoints are accurate (m2tune export)
            config = KernelConfig.of(kernel, {**module.DEFAULT.as_dict(), **training_params})
            why = module.check(problem, config) or training_reason(kernel, config)
            role = ", training entry"
        if why:
            skipped.append(f"{path}: bucket {entry.name or entry.bucket}: {why}")
            continue
        d = distance(problem, entry.bucket)
        reason = f"exact bucket {entry.name}{role}" if d == 0 and entry.bucket == bucket_of(problem) else \
            f"nearest bucket {entry.name}{role} (distance {d:.2f})"
        return Choice(kernel, config, path, reason, gpu, entry.name, d, entry.measured, tuple(skipped))
    why = f"no tuned {kernel} config for {gpu}" + (" usable here" if ranked or skipped else "")
    if not ranked and not skipped:
        _warn_once(f"m2tune: no tuned {kernel} profile for GPU {gpu!r} in {[str(f) for f in folders]}; "
                   "using the default config (m2tune tune + m2tune export make one)")
    return default_choice(kernel, problem, gpu=gpu, interpreter=False, why=why, skipped=tuple(skipped))


def clear_cache() -> None:
    _lookup.cache_clear()
    _warned.clear()
