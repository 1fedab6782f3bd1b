"""The `m2tune` command line."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import click

from . import __version__, variants
from .problem import SHAPES, shape as named_shape


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="m2tune")
def main() -> None:
    """Tune, validate and ship Triton kernels for the M²RNN recurrence."""


@main.command()
def shapes() -> None:
    """List the named problem shapes."""
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
@click.option("--shape", "shape_name", default="tiny", show_default=True,
              type=click.Choice(sorted(SHAPES)), help="Named problem shape.")
@click.option("--grid", default=None, help="Config grid from search_spaces/m2rnn_fwd_grids.yaml "
              "[default: h200 on a GPU, cpu otherwise].")
@click.option("--dtype", default=None, type=click.Choice(["float32", "bfloat16", "float16"]),
              help="Override the shape's dtype.")
@click.option("--reps", default=20, show_default=True, help="Timed repetitions per config (GPU).")
@click.option("--lengths", default=None, help="Two validation lengths, e.g. 128,512 "
              "[default: S/4 and S, capped at 128,512 on a GPU].")
@click.option("--configs", "limit", type=int, default=None, help="Only the first N configs of the grid.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the full results as JSON here.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead of a table.")
def bench(shape_name: str, grid: Optional[str], dtype: Optional[str], reps: int,
          lengths: Optional[str], limit: Optional[int], out: Optional[Path], as_json: bool) -> None:
    """Validate and time a grid of forward configs on one shape.

    On a machine without a GPU the kernels run in the Triton interpreter: every
    config is checked for correctness and the times printed are interpreter
    wall time, which says nothing about GPU speed.
    """
    interp = variants.use_interpreter_without_gpu()
    from .measure.bench import KERNEL, bench_forward, load_grid, report, time_reference

    problem = named_shape(shape_name)
    if dtype:
        problem = problem.with_dtype(dtype)
    device = "cpu" if interp else "cuda"
    grid = grid or ("cpu" if interp else "h200")
    if lengths:
        lens = tuple(int(x) for x in lengths.split(","))
        if len(lens) != 2:
            raise click.BadParameter("give two lengths, e.g. 128,512", param_hint="--lengths")
    else:
        short = max(1, problem.S // 4)
        lens = (short, 4 * short) if interp else (min(short, 128), min(4 * short, 512))
    configs = load_grid(grid)[:limit]
    default = variants.spec(KERNEL).DEFAULT.as_dict()
    log = (lambda *_: None) if as_json else click.echo
    log(f"m2tune bench: {shape_name} ({problem.describe()}), grid {grid!r} ({len(configs)} configs), "
        f"backend {'Triton interpreter (CPU)' if interp else 'cuda'}, validation at S={lens}")
    log(f"  {'status':<15} {'us/step':>9} {'ms':>9} {'spread':>7} {'max err':>9}  config")
    rows = bench_forward(problem, configs, device=device, lengths=lens, reps=reps,
                         on_row=lambda r: log(_row_line(r, default)))
    ref = time_reference(problem, device=device)
    command = "m2tune " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    rep = report(shape_name, problem, grid, rows, ref, command)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rep, indent=2, sort_keys=True) + "\n")
    if as_json:
        click.echo(json.dumps(rep, indent=2, sort_keys=True))
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


def _parse_params(text: Optional[str]) -> dict:
    """'BLOCK_K=32,MATMUL=dot_tf32x3' -> {'BLOCK_K': 32, 'MATMUL': 'dot_tf32x3'} (ints where they parse)."""
    params = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--config")
        value = value.strip()
        params[key.strip()] = int(value) if value.lstrip("-").isdigit() else value
    return params


class _Bar:
    """One tqdm bar per phase name ("compile", "time"), created on first use."""

    def __init__(self) -> None:
        self.bars: dict = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        from tqdm import tqdm
        bar = self.bars.get(phase)
        if bar is None:
            bar = self.bars[phase] = tqdm(total=total, desc=phase, unit="cfg", leave=False)
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Profiles folder to write <gpu-slug>/hardware.json into [default: the bundled profiles/].")
@click.option("--refit", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Refit the constants of this hardware.json from its own raw rows (no GPU needed).")
@click.option("--fwd-configs", default=48, show_default=True, help="Forward configs to time.")
@click.option("--bwd-configs", default=36, show_default=True, help="Backward configs to time.")
@click.option("--seed", default=0, show_default=True)
def calibrate(out: Optional[Path], refit: Optional[Path], fwd_configs: int, bwd_configs: int, seed: int) -> None:
    """Measure this GPU and write the performance model's hardware profile."""
    from .model import calibrate as cal
    from .resources import data_dir
    if refit:
        hw = cal.refit(refit)
        refit.write_text(hw.to_json())
        path = refit
    else:
        import torch
        if not torch.cuda.is_available():
            raise click.ClickException("calibrate measures a GPU and none is visible here "
                                       "(--refit works without one)")
        bar = _Bar()
        try:
            hw = cal.calibrate(counts=cal.default_counts(fwd_configs, bwd_configs), seed=seed, progress=bar)
        finally:
            bar.close()
        path = hw.save(out or data_dir("profiles"))
    for line in cal.summary(hw):
        click.echo(line)
    click.echo(f"wrote {path}")


@main.command()
@click.option("--shape", "shape_name", default="paper-7b", show_default=True, type=click.Choice(sorted(SHAPES)))
@click.option("--variant", default="m2rnn_fwd", show_default=True, type=click.Choice(variants.names()))
@click.option("--target", default=None, help="GPU slug of the hardware profile [default: this GPU].")
@click.option("--config", "config_text", default=None, help="Parameters that differ from the default, "
              "e.g. BLOCK_K=32,MATMUL=dot_tf32x3.")
def predict(shape_name: str, variant: str, target: Optional[str], config_text: Optional[str]) -> None:
    """Predicted time of one config and the term that binds it (no GPU needed)."""
    from .model import perfmodel
    from .model.hardware import HardwareProfileError, resolve_target
    from .resources import data_dir
    try:
        hw = resolve_target(target, [data_dir("profiles")])
    except HardwareProfileError as exc:
        raise click.ClickException(str(exc)) from None
    spec = variants.spec(variant)
    config = spec.config(_parse_params(config_text))
    problem = named_shape(shape_name)
    why = spec.check(problem, config)
    if why:
        raise click.ClickException(f"{config.short()}: {why}")
    pred = perfmodel.predict(problem, config, hw)
    click.echo(f"predicted for {hw.name}: {pred.time_ms:.3f} ms ({pred.step_us:.3f} us/step), bound by {pred.bound}")
    g = pred.geometry
    click.echo(f"  {g.programs} programs, {g.occupancy} per SM (limit: {g.occupancy_limit}, "
               f"{g.regs} registers{'' if g.regs_measured else ' estimated'}), {g.waves} wave(s)")
    click.echo(f"  per step: latency {pred.latency_us:.3f} us, throughput {pred.throughput_us:.3f} us; "
               f"memory {pred.memory_ms:.3f} ms, compute {pred.compute_ms:.3f} ms in all")
    for name, us in sorted(pred.latency_terms.items(), key=lambda kv: -kv[1]):
        if us > 0:
            click.echo(f"    {name:<18} {us:.4f} us")


@main.command()
@click.option("--shape", "shape_name", default="paper-7b", show_default=True,
              help="A named shape (m2tune shapes) or a bucket of the search space.")
@click.option("--variant", default="m2rnn_fwd", show_default=True,
              help="Kernel to tune; several of one role, comma-separated (m2rnn_bwd,m2rnn_bwd_lean), are tuned "
              "one after the other and compared: the runtime runs the faster. Known: " + ", ".join(variants.names()))
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "gpu", "model"]),
              help="gpu: validate and time on this machine's GPUs; model: check in the Triton interpreter and "
              "score with the performance model for --target (no GPU needed); auto: gpu if one is visible.")
@click.option("--target", default=None, help="GPU slug whose hardware profile the model backend uses "
              "(e.g. nvidia-h200) [default: this GPU].")
@click.option("--trials", default=100, show_default=True, help="Trials run in the study: configs rejected "
              "before compiling and candidates the model prunes are recorded but not counted (a resumed "
              "study counts the ones it has).")
@click.option("--sampler", default="tpe", show_default=True,
              type=click.Choice(["tpe", "random", "grid", "cmaes", "gp"]))
@click.option("--seed", default=0, show_default=True)
@click.option("--storage", default=None, help="Optuna storage URL [default: sqlite:///m2tune.db]; "
              "a postgresql:// URL shared by several hosts makes them work on one study.")
@click.option("--study", "study_name", default=None, help="Study name [default: variant/shape/gpu/backend].")
@click.option("--gpus", default="0", show_default=True, help="GPU indices, one worker each, e.g. 0,1,2,3.")
@click.option("--prune/--no-prune", default=True, show_default=True,
              help="Skip candidates the model predicts far slower than the best so far (gpu backend).")
@click.option("--trial-timeout", default=180.0, show_default=True, help="Seconds one trial may take.")
@click.option("--reps", default=20, show_default=True, help="Timed repetitions per trial (gpu backend).")
@click.option("--confirm", default=5, show_default=True, help="Top configs re-timed against the default at the end.")
@click.option("--space", default=None, help="Search-space file [default: search_spaces/<variant>.yaml].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def tune(shape_name: str, variant: str, backend: str, target: Optional[str], trials: int, sampler: str,
         seed: int, storage: Optional[str], study_name: Optional[str], gpus: str, prune: bool,
         trial_timeout: float, reps: int, confirm: int, space: Optional[str], as_json: bool) -> None:
    """Find the fastest validated config for one shape: an Optuna study, resumable."""
    from .tuning import summary as summ
    from .tuning.options import TuneOptions
    from .tuning.storage import DEFAULT_URL
    if backend == "auto":
        backend = "gpu" if variants.cuda_available() else "model"
    try:
        gpu_ids = tuple(int(g) for g in gpus.split(",") if g.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated GPU indices, got {gpus!r}", param_hint="--gpus") from None
    kernels = [v.strip() for v in variant.split(",") if v.strip()]
    unknown = [k for k in kernels if k not in variants.REGISTRY]
    if not kernels or unknown:
        raise click.BadParameter(f"unknown kernel {', '.join(unknown) or '(none)'}; known: {', '.join(variants.names())}",
                                 param_hint="--variant")
    roles = {variants.spec(k).role for k in kernels}
    if len(roles) > 1:
        raise click.BadParameter(f"{variant} mixes kernels of roles {sorted(roles)}; give kernels of one role",
                                 param_hint="--variant")
    if len(kernels) > 1 and (space or study_name):
        raise click.BadParameter("--space and --study name one study; give one --variant with them",
                                 param_hint="--variant")
    results = [_tune_one(TuneOptions(variant=k, shape=shape_name, backend=backend, target=target, trials=trials,
                                     sampler=sampler, seed=seed, storage=storage or DEFAULT_URL, study=study_name,
                                     gpus=gpu_ids, prune=prune, trial_timeout_s=trial_timeout, reps=reps,
                                     confirm=confirm, space=space), as_json) for k in kernels]
    if as_json:
        click.echo(json.dumps(results[0] if len(results) == 1 else results, indent=2, sort_keys=True, default=str))
        return
    for result in results:
        for line in summ.table(result):
            click.echo(line)
    if len(results) > 1:
        for line in summ.comparison(results):
            click.echo(line)


def _tune_one(opts, as_json: bool) -> dict:
    """One study with its progress bar; errors the user can act on become one line."""
    from .model.hardware import HardwareProfileError
    from .tuning.options import TuneError
    from .tuning.storage import StorageError
    from .tuning.space import SpaceError
    from .tuning.tune import Tuner
    backend = opts.backend
    bar = None
    if not as_json:
        from tqdm import tqdm
        bar = tqdm(total=opts.trials, desc=opts.variant, unit="trial", dynamic_ncols=True)

    def show(progress) -> None:
        if bar is None:
            return
        bar.update(progress.done - bar.n)
        fails = {k: v for k, v in progress.categories.items() if k != "ok"}
        best = f"{progress.best_ms:.4f} ms" if progress.best_ms is not None else "-"
        bar.set_postfix_str(f"best {best}{' (predicted)' if backend == 'model' else ''} "
                            f"ok {progress.categories.get('ok', 0)} "
                            + " ".join(f"{k} {v}" for k, v in sorted(fails.items())))
    try:
        tuner = Tuner(opts, on_progress=show)
        show(tuner.progress)
        return tuner.run()
    except (TuneError, HardwareProfileError, SpaceError, StorageError, KeyError) as exc:
        raise click.ClickException(str(exc).strip('"')) from None
    finally:
        if bar is not None:
            bar.close()


@main.command()
@click.option("--storage", required=True, help="Optuna storage URL of the studies (e.g. sqlite:///m2tune.db).")
@click.option("--study", "studies", multiple=True, help="Study to export (repeatable) [default: all].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Profiles folder [default: the bundled profiles/].")
def export(storage: str, studies: tuple[str, ...], out: Optional[Path]) -> None:
    """Write the best validated config of each study into profiles/<gpu>/<kernel>.json."""
    from .resources import data_dir
    from .tuning.export import ExportError, export as run_export
    from .tuning.storage import StorageError
    try:
        paths = run_export(storage, out or data_dir("profiles"), studies=studies or None)
    except (ExportError, StorageError) as exc:
        raise click.ClickException(str(exc)) from None
    for path in paths:
        click.echo(f"wrote {path}")


@main.command()
@click.option("--shape", "shape_name", default="paper-7b", show_default=True, type=click.Choice(sorted(SHAPES)))
@click.option("--gpu", default=None, help="GPU name or slug to look up for [default: this machine's GPU].")
@click.option("--dtype", default=None, type=click.Choice(["float32", "bfloat16", "float16"]))
def show(shape_name: str, gpu: Optional[str], dtype: Optional[str]) -> None:
    """What the m2rnn op would run for a shape on this machine, and why."""
    import logging

    from . import runtime
    from .gpu import current_gpu
    logging.basicConfig(format="%(message)s")
    problem = named_shape(shape_name)
    if dtype:
        problem = problem.with_dtype(dtype)
    gpu = gpu or current_gpu()
    interp = variants.interpreting() or gpu is None
    click.echo(f"{shape_name}: {problem.describe()}")
    click.echo(f"GPU: {gpu or 'none (the op runs the Triton interpreter or the reference)'}; "
               f"profile folders: {', '.join(str(f) for f in runtime.search_folders())}")
    for role, training, label in (("forward", True, "training"), ("backward", True, "training"),
                                  ("forward", False, "inference (no gradients)")):
        choice = runtime.choose(role, problem, gpu=gpu, interpreter=interp and gpu is None, training=training)
        click.echo(f"  {label}: " + choice.describe())
        if choice.distance is not None:
            click.echo(f"    bucket {choice.bucket}, distance {choice.distance:.2f}")
        for why in choice.skipped:
            click.echo(f"    skipped: {why}")


@main.command()
@click.argument("folders", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
def check(folders: tuple[Path, ...]) -> None:
    """Validate every tuned-config file (schema, staleness); exit 1 on any problem."""
    from .runtime import search_folders
    from .tuning.check import check_folder
    problems = 0
    for folder in folders or search_folders():
        for line, ok in check_folder(folder):
            click.echo(("  ok   " if ok else "  FAIL ") + line)
            problems += not ok
    if problems:
        raise SystemExit(1)


@main.command()
@click.option("--storage", required=True, help="Optuna storage URL of the studies (e.g. sqlite:///m2tune.db).")
@click.option("--study", "studies", multiple=True, help="Study to show (repeatable) [default: all].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("report.html"),
              show_default=True, help="HTML file to write.")
def report(storage: str, studies: tuple[str, ...], out: Path) -> None:
    """Dashboards of tuning studies in one self-contained HTML file (no GPU needed).

    Per study: trial history, time by parameter value, model vs measurement, the best configs'
    time per step against the model's bounds, and failures by category.
    """
    from .report.page import ReportError, write_report
    from .tuning.storage import StorageError
    try:
        path = write_report(storage, out, studies=studies or None)
    except (ReportError, StorageError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
