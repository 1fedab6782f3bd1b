"""What one `m2tune tune` run is asked to do (TuneOptions), the study it makes, and its progress."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .storage import DEFAULT_URL


class TuneError(RuntimeError):
    pass


@dataclass(frozen=True)
class TuneOptions:
    variant: str = "m2rnn_fwd"           # also the search-space file name, unless `space` is given
    shape: str = "paper-7b"              # a named shape or a bucket of the search space
    backend: str = "gpu"                 # "gpu", "model" or "replay"
    target: Optional[str] = None         # model and replay backends: GPU slug of the hardware profile
    grid: Optional[str] = None           # replay backend: the recorded grid (CSV) it scores from
    trials: int = 100                    # scored trials wanted in the study (duplicates not counted)
    budget_s: Optional[float] = None     # wall seconds this run may ask new trials for (running ones
                                         # finish, the confirm stage follows); the study resumes later
    sampler: str = "tpe"
    seed: int = 0
    storage: str = DEFAULT_URL
    study: Optional[str] = None
    gpus: tuple[int, ...] = (0,)
    prune: bool = True
    prune_factor: float = 2.5            # prune when predicted > factor x predicted time of the best
    trial_timeout_s: float = 180.0
    reps: int = 20
    confirm: int = 5                     # top configs re-timed in the confirm stage (gpu backend)
    confirm_rounds: int = 3
    lookahead: int = 4                   # gpu backend: trials compiling ahead of the one being timed
    space: Optional[str] = None
    shipped_starts: bool = True          # enqueue the profiles' configs for this bucket (shipped.py); off
                                         # where the search itself is measured (bench/replay_efficiency.py)
    profiles: tuple[str, ...] = ()       # folders searched for hardware.json (bundled profiles/ last)
    # kernels outside the registry (name, spec "module:ATTR", kernel module), registered here and in
    # every worker
    extra_variants: tuple[tuple[str, str, str], ...] = ()


@dataclass
class Progress:
    """What the progress bar and the summary show; updated under the study lock."""
    done: int = 0
    best_ms: Optional[float] = None
    categories: Counter = field(default_factory=Counter)


def study_name(opts: TuneOptions, gpu_slug: str) -> str:
    return opts.study or f"{opts.variant}/{opts.shape}/{gpu_slug}/{opts.backend}"


def hardware_for(opts: TuneOptions, required: bool):
    """The hardware profile of the study's GPU (--target, else this GPU), None if none and not required."""
    from ..model.hardware import HardwareProfileError, resolve_target
    from ..resources import data_dir
    folders = [Path(p) for p in opts.profiles] + [data_dir("profiles")]
    try:
        return resolve_target(opts.target, folders)
    except HardwareProfileError:
        if required:
            raise
        return None
