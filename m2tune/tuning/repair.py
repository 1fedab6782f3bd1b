"""A feasible candidate near an infeasible one, for the tuner to enqueue (tune.py `_screen`).

On a thin bucket almost the whole space is infeasible (lean backward at square-64: 0.23% of
random points pass; every starting point and the default fail the register budget): the sampler's
proposals are rejected one after another and the study hits its cap on free answers having run
one trial. The rejected proposal still teaches TPE (told with a penalty); its repair gives the
study something to run. The search keeps what the sampler chose as far as it can: first every
change of 1, then 2, then 3 searched parameters, in an order drawn from the seed; then uniform
random points of the space. It is bounded in draws and seconds, and deterministic for a seed
while the time limit is not hit.
"""
from __future__ import annotations

import itertools
import math
import random
import time
from typing import Any, Iterable, Iterator, Mapping, Optional

from ..problem import Problem
from .duplicates import key
from .space import SearchSpace

MAX_CHANGED = 3          # mutations of up to this many parameters before random points
LEVEL_CAP = 5000         # a level with more mutations than this is sampled, not enumerated
MAX_DRAWS = 10000        # candidates looked at per repair, mutations and random points together
TIME_LIMIT_S = 2.0
# A repair that finds nothing costs its whole search: after this many in a row a tuner takes the
# space to have nothing left near the sampler's proposals and stops repairing (the cap on free
# answers then ends a hopeless study as it did before repairs)
FAILURES_LIMIT = 3


def held(trials: Iterable[Any], names: Iterable[str]) -> set[tuple]:
    """Keys (over the searched `names`) of every candidate a study's trials hold: tried, in any
    state, or waiting in its queue."""
    names = set(names)
    return {key({k: v for k, v in (t.system_attrs.get("fixed_params", {}) if t.state.name == "WAITING"
                                   else t.params).items() if k in names}) for t in trials}


def reasons(space: SearchSpace, spec: Any, problem: Problem, params: Mapping[str, Any]) -> list[str]:
    """Why `params` gets no trial on `problem`: the space's rules, else the kernel's check()."""
    return [w for w in space.violations(params, problem) or [spec.check(problem, space.config(params))] if w]


def repair(space: SearchSpace, spec: Any, problem: Problem, params: Mapping[str, Any], *, seed: int,
           exclude: Iterable[tuple] = (), max_draws: int = MAX_DRAWS,
           time_limit_s: float = TIME_LIMIT_S) -> Optional[dict[str, Any]]:
    """A feasible point of the space (searched parameters only, values from the space) near
    `params`, none of whose keys is in `exclude`; None when none was found within the bounds."""
    rng = random.Random(seed)
    start = {name: params.get(name, space.defaults[name]) for name in space.params}
    seen = set(exclude) | {key(start)}
    deadline = time.monotonic() + time_limit_s
    candidates = itertools.chain(_mutations(space, start, rng), _uniform(space, rng))
    for point in itertools.islice(candidates, max_draws):
        if time.monotonic() > deadline:
            return None
        k = key(point)
        if k in seen:
            continue
        seen.add(k)
        try:
            if not reasons(space, spec, problem, point):
                return point
        except Exception:       # a point the rules or check() cannot judge is no repair
            continue
    return None


def _mutations(space: SearchSpace, start: dict[str, Any], rng: random.Random) -> Iterator[dict[str, Any]]:
    """`start` with 1, then 2, ... MAX_CHANGED parameters changed; each level in a random order,
    a level too large to list drawn at random instead (LEVEL_CAP draws)."""
    others = {name: [v for v in p.values() if v != start.get(name)] for name, p in space.params.items()}
    names = [n for n in others if others[n]]
    for changed in range(1, min(MAX_CHANGED, len(names)) + 1):
        subsets = list(itertools.combinations(names, changed))
        size = sum(math.prod(len(others[n]) for n in s) for s in subsets)
        if size <= LEVEL_CAP:
            level = [dict(zip(s, values)) for s in subsets for values in itertools.product(*(others[n] for n in s))]
            rng.shuffle(level)
        else:
            level = ({n: rng.choice(others[n]) for n in rng.choice(subsets)} for _ in range(LEVEL_CAP))
        for change in level:
            yield {**start, **change}


def _uniform(space: SearchSpace, rng: random.Random) -> Iterator[dict[str, Any]]:
    values = space.grid_values()
    while True:
        yield {name: rng.choice(v) for name, v in values.items()}
