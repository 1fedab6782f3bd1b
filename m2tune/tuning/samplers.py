"""Optuna samplers by name, imported only when chosen.

Names: tpe (default), random, grid, cmaes, gp. Every sampler is seeded. CMA-ES and GP need
extra packages (cmaes; scipy) that m2tune does not install: asking for one without them
gives an error that says what to install, not an ImportError from deep inside Optuna.

A study is driven by `PerTrial`, which makes the named sampler afresh for every trial, seeded
from (seed, trial number) (the grid sampler excepted: it hands out grid points by trial number). Trial numbers are unique within a study, so processes sharing one
(several hosts on one PostgreSQL study, each started with the same --seed) do not all propose
the same candidates, and a single-process run is still reproducible from its seed.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

NAMES = ("tpe", "random", "grid", "cmaes", "gp")


def _tpe(seed: int, grid: Mapping[str, list[Any]]) -> Any:
    import optuna
    # multivariate: the parameters interact (BLOCK_K x num_warps x MATMUL), so model them jointly;
    # constant_liar: trials asked ahead (compiling while another is timed) spread out
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10, constant_liar=True)


def _random(seed: int, grid: Mapping[str, list[Any]]) -> Any:
    import optuna
    return optuna.samplers.RandomSampler(seed=seed)


def _grid(seed: int, grid: Mapping[str, list[Any]]) -> Any:
    import optuna
    return optuna.samplers.GridSampler({k: list(v) for k, v in grid.items()}, seed=seed)


def _cmaes(seed: int, grid: Mapping[str, list[Any]]) -> Any:
    import optuna
    _require(NEEDS["cmaes"], "cmaes")
    # CMA-ES handles the numeric parameters; categorical ones fall back to random sampling
    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


def _gp(seed: int, grid: Mapping[str, list[Any]]) -> Any:
    import optuna
    _require(NEEDS["gp"], "gp")
    return optuna.samplers.GPSampler(seed=seed)


def _require(module: str, sampler: str) -> None:
    import importlib.util
    if importlib.util.find_spec(module) is None:
        raise SamplerError(f"sampler {sampler!r} needs the {module!r} package: pip install {module}")


class SamplerError(ValueError):
    pass


# what each sampler needs beyond optuna (module to import)
NEEDS = {"cmaes": "cmaes", "gp": "scipy"}


def available() -> tuple[str, ...]:
    """The samplers this environment can make: the command line offers only these."""
    import importlib.util
    return tuple(n for n in NAMES if n not in NEEDS or importlib.util.find_spec(NEEDS[n]) is not None)


_REGISTRY: dict[str, Callable[[int, Mapping[str, list[Any]]], Any]] = {
    "tpe": _tpe, "random": _random, "grid": _grid, "cmaes": _cmaes, "gp": _gp,
}


def make(name: str, *, seed: int, grid: Mapping[str, list[Any]]) -> Any:
    """The sampler called `name`; `grid` is the search space as lists (used by the grid sampler)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise SamplerError(f"unknown sampler {name!r}; known: {', '.join(NAMES)}") from None
    return factory(seed, grid)


def trial_seed(seed: int, number: int) -> int:
    import numpy
    return int(numpy.random.SeedSequence([seed, number]).generate_state(1)[0])


def per_trial(name: str, *, seed: int, grid: Mapping[str, list[Any]]) -> Any:
    """The sampler `name` (checked now) as the tuner drives it: made afresh for every trial and
    seeded from (seed, trial number); `exhausted(study)` says when a grid is used up."""
    from optuna.samplers import BaseSampler, GridSampler

    class PerTrial(BaseSampler):
        # Optuna's samplers keep nothing between trials that is not in the storage, their RNG
        # aside, so making one per trial changes only where their randomness comes from.
        def __init__(self) -> None:
            self.inner = make(name, seed=seed, grid=grid)

        def before_trial(self, study, trial) -> None:
            # not the grid sampler: its seed shuffles the grid, and grid ids recorded by earlier
            # trials index that order (it hands trial n grid point n first, distinct anyway)
            if name != "grid":
                self.inner = make(name, seed=trial_seed(seed, trial.number), grid=grid)
            self.inner.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self.inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self.inner.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values) -> None:
            # GridSampler's after_trial only calls study.stop() once its grid is used up, which
            # raises outside study.optimize(); the tuner asks exhausted() instead
            if not isinstance(self.inner, GridSampler):
                self.inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self.inner.reseed_rng()

        def exhausted(self, study) -> bool:
            return isinstance(self.inner, GridSampler) and self.inner.is_exhausted(study)

    return PerTrial()
