"""A search space as the tuner uses it: what it searches, what it skips, what it tries first,
which shapes. Read from a file by space_file.load_space (the file's schema is there).

- params: which of the kernel's PARAMS are searched and over which values (choices or an int range);
  a parameter not listed stays at the kernel's default;
- constraints: rules a config must satisfy to be worth a trial, each with the reason it exists;
- enqueue: known-good configs tried right after the kernel's default;
- buckets: the problem shapes to tune, each an m2tune.problem.Problem.

Importing this module imports neither Triton nor optuna; distributions() imports optuna.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..problem import KernelConfig, Problem, member, shape as named_shape
from .rules import Env, Rule

PROBLEM_NAMES = ("B", "S", "K", "V", "N", "Nq", "Nk", "Nv", "Nw", "Nf", "tokens", "dtype")
HEADS = ("Nq", "Nk", "Nv", "Nw", "Nf")


class SpaceError(ValueError):
    """A search-space file is malformed; the message starts with `<file>:<line>: <field>: `."""

    def __init__(self, source: str, line: int, field: str, detail: str) -> None:
        self.source, self.line, self.field, self.detail = source, line, field, detail
        super().__init__(f"{source}:{line}: {field}: {detail}")

    def __reduce__(self):
        # the default pickling replays args=(message,) into __init__; workers send errors across processes
        return type(self), (self.source, self.line, self.field, self.detail)


# ---------------------------------------------------------------------------------------------
# What a loaded file holds.

@dataclass(frozen=True)
class Param:
    """One searched parameter: a list of choices, or every integer low, low+step, ..., high."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: int | None = None
    high: int | None = None
    step: int = 1
    log: bool = False

    @property
    def is_range(self) -> bool:
        return self.choices is None

    def values(self) -> list[Any]:
        if self.choices is not None:
            return list(self.choices)
        return list(range(self.low, self.high + 1, self.step))

    def __contains__(self, value: Any) -> bool:
        return member(value, self.values())

    def distribution(self) -> Any:
        import optuna.distributions as od     # optuna only where a study needs it
        if self.choices is not None:
            return od.CategoricalDistribution(self.choices)
        return od.IntDistribution(self.low, self.high, log=self.log, step=self.step)


@dataclass(frozen=True)
class Constraint:
    """A rule every config must satisfy, the reason it exists, and where it was written."""

    rule: str
    why: str
    source: str
    line: int
    field: str
    evaluate: Rule = dataclasses.field(repr=False, compare=False)

    def holds(self, env: Env) -> bool:
        try:
            return bool(self.evaluate(env))
        except (TypeError, ValueError, ArithmeticError) as e:
            raise SpaceError(self.source, self.line, self.field,
                             f"{self.rule!r} fails to evaluate: {type(e).__name__}: {e}") from None


@dataclass(frozen=True)
class Bucket:
    """A named problem shape to tune."""

    name: str
    problem: Problem


def problem_env(problem: Problem) -> dict[str, Any]:
    """The problem's values under the names rules use."""
    return {name: getattr(problem, name) for name in PROBLEM_NAMES}


@dataclass(frozen=True)
class SearchSpace:
    """A loaded, checked search-space file."""

    source: Path
    variant: str
    params: Mapping[str, Param]                  # searched parameters, in file order
    defaults: Mapping[str, Any]                  # the variant's DEFAULT: every parameter, searched or not
    constraints: tuple[Constraint, ...]
    enqueue: tuple[dict[str, Any], ...]          # as written: partial configs over searched parameters
    buckets: tuple[Bucket, ...]
    description: str = ""

    def distributions(self) -> dict[str, Any]:
        """Optuna distribution of every searched parameter (Categorical or Int)."""
        return {name: param.distribution() for name, param in self.params.items()}

    def environment(self, params: Mapping[str, Any] | KernelConfig, problem: Problem) -> dict[str, Any]:
        """Everything a rule may name: the variant's defaults, overridden by `params`, and the problem."""
        return {**self._merged(params), **problem_env(problem)}

    def violations(self, params: Mapping[str, Any] | KernelConfig, problem: Problem) -> list[str]:
        """The `why` of every constraint that `params` (unlisted ones at their default) break on `problem`."""
        env = self.environment(params, problem)
        return [c.why for c in self.constraints if not c.holds(env)]

    def config(self, params: Mapping[str, Any] | KernelConfig) -> KernelConfig:
        """The full KernelConfig: `params` over the variant's defaults."""
        return KernelConfig.of(self.variant, self._merged(params))

    def starting_points(self) -> list[dict[str, Any]]:
        """Searched-parameter dicts to enqueue: the variant's default, then every `enqueue` entry
        completed with defaults; duplicates dropped."""
        base = {name: self.defaults[name] for name in self.params}
        points: list[dict[str, Any]] = []
        for entry in ({}, *self.enqueue):
            point = {**base, **entry}
            if point not in points:
                points.append(point)
        return points

    def grid_values(self) -> dict[str, list[Any]]:
        """Every value of every searched parameter (what optuna's GridSampler takes)."""
        return {name: param.values() for name, param in self.params.items()}

    def size(self) -> int:
        """Number of points in the full grid, before constraints."""
        return math.prod(len(values) for values in self.grid_values().values())

    def grid(self, problem: Problem | None = None) -> Iterator[dict[str, Any]]:
        """Every combination of searched values; with a problem, only those breaking no constraint."""
        values = self.grid_values()
        for combo in itertools.product(*values.values()):
            point = dict(zip(values, combo))
            if problem is None or not self.violations(point, problem):
                yield point

    def bucket(self, name: str) -> Bucket:
        for bucket in self.buckets:
            if bucket.name == name:
                return bucket
        raise KeyError(f"no bucket {name!r} in {self.source}; known: "
                       f"{', '.join(b.name for b in self.buckets)}")

    def _merged(self, params: Mapping[str, Any] | KernelConfig) -> dict[str, Any]:
        if isinstance(params, KernelConfig):
            if params.variant != self.variant:
                raise ValueError(f"config is for {params.variant!r}, this space is for {self.variant!r}")
            params = params.as_dict()
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(f"unknown parameters {unknown} for variant {self.variant!r}")
        return {**self.defaults, **params}


def problem_for(space: SearchSpace, name: str) -> Problem:
    """The problem a study tunes: a bucket of its space by that name, else a named shape."""
    for bucket in space.buckets:
        if bucket.name == name:
            return bucket.problem
    return named_shape(name)
