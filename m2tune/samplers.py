"""Optuna samplers by name, imported only when chosen.

Names: tpe (default), random, grid, cmaes, gp. Every sampler is seeded. CMA-ES and GP need
extra packages (cmaes; scipy) that m2tune does not install: asking for one without them
gives an error that says what to install, not an ImportError from deep inside Optuna.
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
    _require("cmaes", "cmaes")
    # CMA-ES handles the numeric parameters; categorical ones fall back to random sampling
    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


def _gp(seed: int, grid: Mapping[str, list[Any]]) -> Any:
    import optuna
    _require("scipy", "gp")
    return optuna.samplers.GPSampler(seed=seed)


def _require(module: str, sampler: str) -> None:
    import importlib.util
    if importlib.util.find_spec(module) is None:
        raise SamplerError(f"sampler {sampler!r} needs the {module!r} package: pip install {module}")


class SamplerError(ValueError):
    pass


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
