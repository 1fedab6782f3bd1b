"""`m2tune shapes` and `m2tune bench`: the named problems; a hand-picked grid validated and timed."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import click

from .. import variants
from ..problem import SHAPES, shape as named_shape
from .group import main
from .options import echo_json, json_option


@main.command()
@json_option()
def shapes(as_json: bool) -> None:
    """List the named problem shapes."""
    if as_json:
        from dataclasses import asdict
        echo_json({name: asdict(p) for name, p in SHAPES.items()})
        return
    for name, p in SHAPES.items():
        click.echo(f"{name:<12} {p.describe()}")


def _config_text(config: dict, default: dict) -> str:
    changed = {k: v for k, v in config.items() if default.get(k) != v}
    return " ".join(f"{k}={v}" for k, v in sorted(changed.items())) or "(default)"


def _row_line(row: dict, default: dict) -> str:
    if row["status"] != "ok":
        why = (row.get("reason") or "")[:90]
        return f"  {row['status']:<15} {'':>9} {'':>9} {'':>7} {'':>9}  {_config_text(row['config'], default)}  {why}"
    return (f"  {'ok':<15} {row['us_per_step']:>9.3f} {row['median_ms']:>9.3f} "
            f"{row['spread'] * 100:>6.1f}% {row['max_error']:>9.2e}  {_config_text(row['config'], default)}")


@main.command()
@click.option("--shape", "shape_name", default="paper-7b", show_default=True,
              type=click.Choice(sorted(SHAPES)), help="Named problem shape.")
@click.option("--grid", default=None, help="Config grid from search_spaces/m2rnn_fwd_grids.yaml "
              "[default: h200 on a GPU, cpu otherwise].")
@click.option("--dtype", default=None, type=click.Choice(["float32", "bfloat16", "float16"]),
              help="Override the shape's dtype.")
@click.option("--reps", default=20, show_default=True, type=click.IntRange(min=1),
              help="Timed repetitions per config (GPU).")
@click.option("--configs", "limit", type=click.IntRange(min=1), default=None, help="Only the first N configs of the grid.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the full results as JSON here.")
@json_option()
def bench(shape_name: str, grid: Optional[str], dtype: Optional[str], reps: int,
          limit: Optional[int], out: Optional[Path], as_json: bool) -> None:
    """Validate and time a grid of forward configs on one shape.

    On a machine without a GPU the kernels run in the Triton interpreter: every
    config is checked for correctness and the times printed are interpreter
    wall time, which says nothing about GPU speed.
    """
    from .group import CliError
    interp = variants.use_interpreter_without_gpu()
    from ..measure.bench import KERNEL, bench_forward, load_grid, report, time_reference
    from ..measure.plan import plan_for

    problem = named_shape(shape_name)
    if dtype:
        problem = problem.with_dtype(dtype)
    device = "cpu" if interp else "cuda"
    grid = grid or ("cpu" if interp else "h200")
    try:
        configs = load_grid(grid)[:limit]
    except KeyError as exc:
        raise CliError(str(exc).strip('"')) from None
    default = variants.spec(KERNEL).DEFAULT.as_dict()
    log = (lambda *_: None) if as_json else click.echo
    log(f"m2tune bench: {shape_name} ({problem.describe()}), grid {grid!r} ({len(configs)} configs), "
        f"backend {'Triton interpreter (CPU)' if interp else 'cuda'}")
    if configs:
        plan = plan_for(KERNEL, problem, configs[0], interpreter=interp)
        log(f"  validation plan v{plan.version}: " + "; ".join(c.describe() for c in plan.cases))
    log(f"  {'status':<15} {'us/step':>9} {'ms':>9} {'spread':>7} {'max err':>9}  config")
    rows = bench_forward(problem, configs, device=device, reps=reps,
                         on_row=lambda r: log(_row_line(r, default)))
    ref = time_reference(problem, device=device)
    command = "m2tune " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    rep = report(shape_name, problem, grid, rows, ref, command)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rep, indent=2, sort_keys=True) + "\n")
    if as_json:
        echo_json(rep)
        return
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["median_ms"])
    failed = len(rows) - len(ok)
    clock = "interpreter wall time, not GPU speed" if interp else "CUDA events, median"
    click.echo(f"\n{len(ok)} of {len(rows)} configs validated ({failed} rejected); times: {clock}")
    click.echo(f"  eager reference: {ref['median_ms']:.1f} ms ({ref['us_per_step']:.2f} us/step)")
    if ok:
        best = ok[0]
        speedup = "" if interp else f", {ref['median_ms'] / best['median_ms']:.0f}x the eager reference"
        click.echo(f"  best: {best['median_ms']:.3f} ms ({best['us_per_step']:.3f} us/step){speedup}, "
                   f"max error {best['max_error']:.2e}: {_config_text(best['config'], default)}")
    if out:
        click.echo(f"  results: {out}")
    if not ok:
        sys.exit(1)
