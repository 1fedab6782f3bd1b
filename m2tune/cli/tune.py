"""`m2tune tune` and `m2tune export`: studies per shape and GPU, and their winners into profiles."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from .. import variants
from .group import CliError, main
from .options import echo_json, gpu_option, json_option, profiles_out, storage_option


def _sampler_choice() -> click.Choice:
    from ..tuning.samplers import available
    return click.Choice(available())


def _kernels(variant: str) -> list[str]:
    kernels = [v.strip() for v in variant.split(",") if v.strip()]
    unknown = [k for k in kernels if k not in variants.REGISTRY]
    if not kernels or unknown:
        raise click.BadParameter(f"unknown kernel {', '.join(unknown) or '(none)'}; known: {', '.join(variants.names())}",
                                 param_hint="--variant")
    roles = {variants.spec(k).role for k in kernels}
    if len(roles) > 1:
        raise click.BadParameter(f"{variant} mixes kernels of roles {sorted(roles)}; give kernels of one role",
                                 param_hint="--variant")
    return kernels


@main.command()
@click.option("--shape", "shape_name", default="paper-7b", show_default=True,
              help="A named shape (m2tune shapes), a bucket of the search space, or an ad-hoc shape "
              "B=1,S=16384,K=64,V=16,N=132 (optional Nq Nk Nv Nw Nf dtype shared_qk).")
@click.option("--variant", default="m2rnn_fwd", show_default=True,
              help="Kernel to tune; several of one role, comma-separated (m2rnn_bwd,m2rnn_bwd_lean), are tuned "
              "one after the other and compared: the runtime runs the faster. Known: " + ", ".join(variants.names()))
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", "gpu", "model", "replay"]),
              help="gpu: validate and time on this machine's GPUs; model: check in the Triton interpreter and "
              "score with the performance model for --gpu (no GPU needed); replay: score from a recorded grid "
              "of GPU measurements (--grid); auto: gpu if one is visible.")
@click.option("--grid", default=None, help="Replay backend: a recorded grid (CSV of measured configs, "
              "bench/record_grid.py) of this variant at this shape.")
@gpu_option("GPU whose hardware profile the model backend uses (e.g. nvidia-h200) [default: this GPU].")
@click.option("--trials", default=100, show_default=True, type=click.IntRange(min=1),
              help="Trials run in the study: configs rejected before compiling and candidates the model prunes "
              "are recorded but not counted (a resumed study counts the ones it has).")
@click.option("--sampler", default="tpe", show_default=True, type=_sampler_choice(),
              help="Optuna sampler (those whose packages are installed).")
@click.option("--seed", default=0, show_default=True)
@storage_option()
@click.option("--study", "study_name", default=None, help="Study name [default: variant/shape/gpu/backend].")
@click.option("--gpus", default="0", show_default=True, help="GPU indices, one worker each, e.g. 0,1,2,3.")
@click.option("--prune/--no-prune", default=True, show_default=True,
              help="Skip candidates the model predicts far slower than the best so far (gpu backend).")
@click.option("--trial-timeout", default=180.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds one trial may take (the interpreter's grow with the validation plan's steps).")
@click.option("--reps", default=20, show_default=True, type=click.IntRange(min=1),
              help="Timed repetitions per trial (gpu backend).")
@click.option("--confirm", default=5, show_default=True, type=click.IntRange(min=0),
              help="Top configs re-timed against the default at the end.")
@click.option("--space", default=None, help="Search-space file [default: search_spaces/<variant>.yaml].")
@click.option("--all-buckets", is_flag=True,
              help="Tune every bucket of the search space in turn, each in its own resumable study "
              "(instead of --shape).")
@click.option("--budget-s", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Wall seconds each study may ask new trials for (running trials finish, the confirm "
              "stage follows); a later run resumes it.")
@json_option()
@click.pass_context
def tune(ctx: click.Context, shape_name: str, variant: str, backend: str, gpu: Optional[str], trials: int,
         sampler: str, seed: int, storage: str, study_name: Optional[str], gpus: str, prune: bool,
         trial_timeout: float, reps: int, confirm: int, space: Optional[str], all_buckets: bool,
         budget_s: Optional[float], grid: Optional[str], as_json: bool) -> None:
    """Find the fastest validated config for one shape (or every bucket): Optuna studies, resumable."""
    from ..tuning import summary as summ
    from ..tuning.options import TuneOptions
    if backend == "auto":
        backend = "gpu" if variants.cuda_available() else "model"
    if (grid is not None) != (backend == "replay"):
        raise click.BadParameter("--grid and --backend replay go together", param_hint="--grid")
    try:
        gpu_ids = tuple(int(g) for g in gpus.split(",") if g.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated GPU indices, got {gpus!r}", param_hint="--gpus") from None
    kernels = _kernels(variant)
    if "=" in shape_name:                 # an ad-hoc shape: one canonical spelling names its study
        from ..problem import parse_shape, shape_text
        try:
            shape_name = shape_text(parse_shape(shape_name))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--shape") from None
    if len(kernels) > 1 and (space or study_name):
        raise click.BadParameter("--space and --study name one study; give one --variant with them",
                                 param_hint="--variant")
    if space and not Path(space).is_file() and "/" in space:
        raise click.BadParameter(f"no search-space file {space}", param_hint="--space")
    runs = [(k, shape_name) for k in kernels]
    if all_buckets:
        if ctx.get_parameter_source("shape_name") != click.core.ParameterSource.DEFAULT or study_name:
            raise click.BadParameter("--all-buckets tunes the space's buckets: give no --shape or --study",
                                     param_hint="--all-buckets")
        runs = [(k, b) for k in kernels for b in _bucket_names(space or k)]
    from ..tuning.slots import Slots
    results = []
    with Slots() as slots:      # one set of worker processes for every study of the run
        for k, shape in runs:
            results.append(_tune_one(TuneOptions(
                variant=k, shape=shape, backend=backend, target=gpu, trials=trials, sampler=sampler, seed=seed,
                storage=storage, study=study_name, gpus=gpu_ids, prune=prune, trial_timeout_s=trial_timeout,
                reps=reps, confirm=confirm, space=space, budget_s=budget_s, grid=grid), as_json, slots))
            if not as_json:
                # each study's table as it ends: a run of many buckets stopped from outside keeps what it said
                for line in summ.table(results[-1]):
                    click.echo(line)
    if as_json:
        echo_json(results[0] if len(results) == 1 else results)
        return
    if len(kernels) > 1 and not all_buckets:
        for line in summ.comparison(results):
            click.echo(line)
    studies = " ".join(f"--study {r['study']}" for r in results)
    click.echo(f"\nstudies in {results[0]['storage']}; next:\n  m2tune export --storage {storage} {studies}\n"
               f"  m2tune report --storage {storage} {studies}")


def _bucket_names(space: str) -> list[str]:
    from ..tuning.space import SpaceError
    from ..tuning.space_file import SpaceFileMissing, load_space
    try:
        names = [b.name for b in load_space(space).buckets]
    except (SpaceError, SpaceFileMissing) as exc:
        raise CliError(str(exc)) from None
    if not names:
        raise click.BadParameter(f"the search space {space} has no buckets", param_hint="--all-buckets")
    return names


def _tune_one(opts, as_json: bool, slots=None) -> dict:
    """One study with its progress bar, drawn only once the study opened: a mistake in the options
    (storage, space, GPU) is one line before anything is drawn."""
    from ..model.hardware import HardwareProfileError
    from ..tuning.options import TuneError
    from ..tuning.samplers import SamplerError
    from ..tuning.space import SpaceError
    from ..tuning.space_file import SpaceFileMissing
    from ..tuning.storage import StorageError
    from ..tuning.tune import Tuner
    bar = None

    def show(progress) -> None:
        if bar is None:
            return
        bar.update(progress.done - bar.n)
        fails = {k: v for k, v in progress.categories.items() if k != "ok"}
        best = f"{progress.best_ms:.4f} ms" if progress.best_ms is not None else "-"
        bar.set_postfix_str(f"best {best}{' (predicted)' if opts.backend == 'model' else ''} "
                            f"ok {progress.categories.get('ok', 0)} "
                            + " ".join(f"{k} {v}" for k, v in sorted(fails.items())))
    errors = (TuneError, HardwareProfileError, SpaceError, SpaceFileMissing, StorageError, SamplerError,
              KeyError)
    try:
        tuner = Tuner(opts, on_progress=show)
    except errors as exc:
        raise CliError(str(exc).strip('"')) from None
    if not as_json:
        from tqdm import tqdm
        bar = tqdm(total=opts.trials, desc=opts.variant, unit="trial", dynamic_ncols=True)
    try:
        show(tuner.progress)
        return tuner.run(slots)
    except errors as exc:
        raise CliError(str(exc).strip('"')) from None
    finally:
        if bar is not None:
            bar.close()


@main.command()
@storage_option()
@click.option("--study", "studies", multiple=True, help="Study to export (repeatable) [default: all].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Profiles folder [default: the first M2TUNE_PROFILES folder, else ./profiles].")
@json_option()
def export(storage: str, studies: tuple[str, ...], out: Optional[Path], as_json: bool) -> None:
    """Write the best validated config of each study into <out>/<gpu>/<kernel>.json."""
    from ..tuning.export import ExportError, export as run_export
    from ..tuning.storage import StorageError
    folder = profiles_out(out)
    try:
        paths = run_export(storage, folder, studies=studies or None)
    except (ExportError, StorageError) as exc:
        raise CliError(str(exc)) from None
    if as_json:
        echo_json({"wrote": [str(p) for p in paths]})
        return
    for path in paths:
        click.echo(f"wrote {path}")
    if folder.resolve() != Path("profiles").resolve():
        click.echo(f"the runtime reads them with M2TUNE_PROFILES={folder}")
