"""The replay backend: a study scored from a recorded grid of GPU measurements, on any machine.

As Kernel Tuner's simulation mode: every config of a search space (or a sample of it) is measured
once on the GPU and written to CSV (model/modelcheck.py's format: shape, variant, config, median_ms,
p20/p80, resources, error); a replayed trial looks its config up there and gets the recorded time or
failure instead of running. So a sampler, model pruning or a budget rule can be compared over many
seeds in seconds, against what the GPU really measured. A config the grid does not hold is answered
`not-recorded` (free: it neither runs nor spends --trials; summaries count them, since on a GPU it
would have cost a trial).

The `error` column: empty for a validated, timed config; otherwise `<status>: message` with a status
of m2tune/status.py (a bare message counts as a launch error).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .. import status, variants
from ..model.modelcheck import read_csv
from ..problem import KernelConfig, Problem, shape as named_shape
from .options import TuneError, TuneOptions
from .trial import TrialResult


class GridError(ValueError):
    pass


def _key(config: KernelConfig) -> tuple:
    # the spec's defaults filled in: a grid recorded before a parameter was added still matches
    # the configs that leave it at its default
    full = variants.spec(config.variant).config(config.as_dict())
    return (full.variant, tuple(sorted(full.as_dict().items())))


@dataclass(frozen=True)
class RecordedGrid:
    """The recorded rows of one (variant, shape): config key -> the row's outcome."""
    source: Path
    variant: str
    shape: str
    rows: Mapping[tuple, dict[str, Any]]

    @property
    def best_ms(self) -> float:
        return min(r["median_ms"] for r in self.rows.values() if r["median_ms"] is not None)

    def outcome(self, config: KernelConfig) -> TrialResult:
        row = self.rows.get(_key(config))
        if row is None:
            return TrialResult(status=status.NOT_RECORDED, message=f"not in the recorded grid {self.source}")
        if row["median_ms"] is not None and not row["error"]:
            return TrialResult(status=status.OK, median_ms=row["median_ms"], p20_ms=row["p20_ms"],
                               p80_ms=row["p80_ms"], resources=row["resources"])
        category, _, message = row["error"].partition(": ")
        if category not in status.ALL:
            category, message = status.LAUNCH_ERROR, row["error"]
        return TrialResult(status=category, message=f"recorded: {message}", resources=row["resources"])


def load_grid(path: str | Path, variant: str, shape: str) -> RecordedGrid:
    """The rows of `path` for `variant` at `shape` (a shape name as the CSV spells it)."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"--grid {path}: no such file")
    try:
        rows = read_csv(path)
    except (KeyError, ValueError) as exc:
        raise GridError(f"--grid {path}: not a recorded grid (model/modelcheck.py CSV): {exc}") from exc
    mine = {}
    for row in rows:
        if row["variant"] == variant and row["shape"] == shape:
            mine[_key(KernelConfig.of(variant, row["config"]))] = row
    if not mine:
        have = sorted({(r["variant"], r["shape"]) for r in rows})
        raise GridError(f"--grid {path}: no rows for {variant} at {shape}; it has {have}")
    if all(r["median_ms"] is None for r in mine.values()):
        raise GridError(f"--grid {path}: no timed row for {variant} at {shape}")
    return RecordedGrid(path, variant, shape, mine)


def check_problem(grid: RecordedGrid, problem: Problem) -> None:
    """The study's problem must be the one the grid was measured at."""
    try:
        recorded = named_shape(grid.shape)
    except (KeyError, ValueError):
        return                      # a bucket name the CSV spells its own way: trusted as given
    if recorded.describe() != problem.describe():
        raise GridError(f"--grid {grid.source}: measured at {recorded.describe()}, the study tunes "
                        f"{problem.describe()}")


def grid_configs(variant: str, shape: str, where: str | None = None,
                 space_file: str | None = None) -> tuple[Problem, list[KernelConfig]]:
    """The problem of `shape` and every config of the space's grid (`space_file`, else the
    variant's own) that its constraints, the extra rule `where` and the spec's check allow: what a
    recorded grid holds (bench/record_grid.py)."""
    import itertools

    from .rules import compile_rule
    from .space import problem_env, problem_for
    from .space_file import load_space
    space = load_space(space_file or variant)
    problem = problem_for(space, shape)
    values = space.grid_values()
    env_problem = problem_env(problem)
    rule = compile_rule(where, [*values, *env_problem]) if where else None
    spec = variants.spec(variant)
    configs = []
    for combo in itertools.product(*values.values()):
        params = dict(zip(values, combo))
        if space.violations(params, problem) or (rule and not rule({**env_problem, **params})):
            continue
        config = space.config(params)
        if spec.check(problem, config) is None:
            configs.append(config)
    return problem, configs


def grid_for(opts: TuneOptions, problem: Problem) -> RecordedGrid:
    """The grid a replayed study scores from (TuneError naming --grid when it cannot be used)."""
    if not opts.grid:
        raise TuneError("the replay backend needs --grid FILE (a recorded grid, CSV)")
    try:
        grid = load_grid(opts.grid, opts.variant, opts.shape)
        check_problem(grid, problem)
    except GridError as exc:
        raise TuneError(str(exc)) from None
    return grid


class ReplayEvaluator:
    name = "replay"

    def __init__(self, grid: RecordedGrid) -> None:
        self.grid = grid

    def evaluate(self, variant: str, problem: Problem, config: KernelConfig, *, seed: int):
        from .backends import Outcome
        result = self.grid.outcome(config)
        return Outcome(result, result.median_ms if result.ok else None, predicted=False,
                       attrs={"replayed_from": str(self.grid.source)})

    def close(self) -> None:
        pass
