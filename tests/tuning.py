"""Shared by the tuner tests: the `m2tune tune` command line and what a study holds afterwards.

Studies are read back with Optuna itself, from the same storage the command wrote: the tests
check what a later run (or export) would see, not what the process said it did.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = "nvidia-h200"            # the bundled profile profiles/nvidia-h200/hardware.json
SHAPE = "tiny"                    # K=32 V=16 float32: a trial is a few seconds in the interpreter
DUPLICATE = "duplicate"


# Every candidate of this space passes the template's check and is validated in the interpreter
# (1-2 s each): no instant invalid-config trials, so a run lasts long enough to be killed midway
# and two processes overlap. 18 points: a few trials already propose some twice.
SMALL_BUCKET = "k16-v16"
SMALL_SPACE = f"""\
variant: m2rnn_fwd
params:
  MATMUL: {{choices: [fma, dot_ieee]}}
  BLOCK_K: {{choices: [16, 8, 4]}}
  PREFETCH: {{low: 0, high: 2}}
buckets:
  - {{name: {SMALL_BUCKET}, B: 2, S: 16, K: 16, V: 16, N: 2, shared_qk: true, dtype: float32}}
"""


def small_space(folder: Path) -> tuple[str, ...]:
    """The options `--space FILE` for SMALL_SPACE, written into `folder` (tune it with shape=SMALL_BUCKET)."""
    path = folder / "small.yaml"
    path.write_text(SMALL_SPACE)
    return ("--space", str(path))


def replay_grid(folder: Path, space: Path, shape: str = SMALL_BUCKET, where: str | None = None) -> str:
    """A recorded grid of every config of `space` at `shape` (tuning/replay.grid_configs, what
    bench/record_grid.py records), timed by the H200 performance model instead of a GPU: for tests
    of the tuner's bookkeeping and of the replay machinery, which the replay backend scores
    instantly instead of the interpreter's seconds per trial."""
    from m2tune.model import perfmodel
    from m2tune.model.hardware import resolve_target
    from m2tune.model.modelcheck import write_csv
    from m2tune.tuning.replay import grid_configs
    problem, configs = grid_configs("m2rnn_fwd", shape, where, str(space))
    hw = resolve_target(TARGET, [ROOT / "profiles"])
    path = folder / "grid.csv"
    write_csv([{"shape": shape, "variant": c.variant, "config": c.as_dict(),
                "median_ms": perfmodel.predict(problem, c, hw).time_ms, "error": ""} for c in configs], path)
    return str(path)


def tune_command(storage: str, study: str, trials: int, *extra: str, shape: str = SHAPE) -> list[str]:
    """`m2tune tune` on the model backend (no GPU needed), as the installed command runs it."""
    return [sys.executable, str(ROOT / "cli.py"), "tune", "--backend", "model", "--target", TARGET,
            "--shape", shape, "--trials", str(trials), "--storage", storage, "--study", study, *extra]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def trials_of(storage: str, study: str, *, wait_s: float = 0.0) -> list:
    """The study's trials; with wait_s, waits that long for the study to exist (another process
    may still be creating it)."""
    import optuna

    from m2tune.tuning.storage import open_storage, quiet
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with quiet():
                return optuna.load_study(study_name=study, storage=open_storage(storage)).get_trials(deepcopy=False)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def scored(trials: list) -> list:
    """Trials that count towards --trials: every category but a duplicate (and unfinished ones)."""
    return [t for t in trials if t.state.is_finished() and t.user_attrs.get("status") not in (None, DUPLICATE)]


def params_key(trial) -> tuple:
    return tuple(sorted(trial.params.items()))


def assert_no_repeats(trials: list) -> None:
    """No candidate was scored twice (the second time must be a recorded duplicate)."""
    seen: dict[tuple, int] = {}
    for t in scored(trials):
        assert params_key(t) not in seen, f"trials {seen[params_key(t)]} and {t.number} both scored {t.params}"
        seen[params_key(t)] = t.number
