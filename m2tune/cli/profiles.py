"""`m2tune show` and `m2tune check`: what the op runs here and why; every tuned-config file judged."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from .. import variants
from ..problem import shape as named_shape
from .group import main
from .options import echo_json, gpu_option, json_option, shape_option

CALLS = (("forward", True, "training"), ("backward", True, "training"), ("forward", False, "inference (no gradients)"))


@main.command()
@shape_option()
@gpu_option("GPU name or slug to look up for [default: this machine's GPU].")
@click.option("--dtype", default=None, type=click.Choice(["float32", "bfloat16", "float16"]))
@click.option("--with-state", is_flag=True, help="The call passes h0 (an initial state).")
@click.option("--clipping", is_flag=True, help="The call clamps state gradients (gradient_clipping).")
@json_option()
def show(shape_name: str, gpu: Optional[str], dtype: Optional[str], with_state: bool, clipping: bool,
         as_json: bool) -> None:
    """What the m2rnn op would run for a shape on this machine, and why."""
    import logging
    from dataclasses import replace

    from .. import runtime
    from ..gpu import current_gpu
    logging.basicConfig(format="%(message)s")
    problem = named_shape(shape_name)
    if dtype:
        problem = problem.with_dtype(dtype)
    if with_state:
        problem = replace(problem, h0=True)
    gpu = gpu or current_gpu()
    interp = variants.interpreting() or gpu is None
    rows = []
    for role, training, label in CALLS:
        choice = runtime.choose(role, problem, gpu=gpu, interpreter=interp and gpu is None, training=training,
                                clipping=clipping)
        rows.append((label, role, choice))
    if as_json:
        echo_json({"shape": shape_name, "problem": problem.describe(), "gpu": gpu,
                   "folders": [str(f) for f in runtime.search_folders()],
                   "calls": [{"call": label, "role": role, "kernel": c.kernel, "config": c.config.as_dict(),
                              "source": c.source, "reason": c.reason, "measured": c.measured,
                              "bucket": c.bucket, "distance": c.distance, "time_ms": c.time_ms,
                              "skipped": list(c.skipped)} for label, role, c in rows]})
        return
    click.echo(f"{shape_name}: {problem.describe()}")
    click.echo(f"GPU: {gpu or 'none (the op runs the Triton interpreter or the reference)'}; "
               f"profile folders: {', '.join(str(f) for f in runtime.search_folders())}")
    for label, _, choice in rows:
        click.echo(f"  {label}: " + choice.describe())
        if choice.distance is not None:
            click.echo(f"    bucket {choice.bucket}, distance {choice.distance:.2f}")
        for why in choice.skipped:
            click.echo(f"    skipped: {why}")


@main.command()
@click.argument("folders", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--revalidate", is_flag=True,
              help="Also prove every entry right on today's validation plan (h0, clipping, packed "
                   "sequences, several chunks) and record it in the file.")
@click.option("--on", "on", type=click.Choice(["gpu", "interpreter"]), default=None,
              help="Where --revalidate runs [default: the GPU if there is one, else the Triton interpreter].")
@click.option("--gpu-index", default=0, show_default=True, type=click.IntRange(min=0),
              help="CUDA device for --revalidate --on gpu.")
@click.option("--strict", is_flag=True, help="Warnings (a file tuned with another Triton version) fail too.")
@json_option()
def check(folders: tuple[Path, ...], revalidate: bool, on: Optional[str], gpu_index: int, strict: bool,
          as_json: bool) -> None:
    """Validate every tuned-config file (schema, staleness); exit 1 on any problem."""
    from ..runtime import search_folders
    from ..tuning.check import check_folder
    lines, problems = [], 0
    chosen = list(folders or search_folders())
    for folder in chosen:
        for line, level in check_folder(folder):
            lines.append({"file": line, "level": level})
            problems += level == "fail" or (strict and level == "warn")
            if not as_json:
                click.echo({"ok": "  ok   ", "warn": "  WARN ", "fail": "  FAIL "}[level] + line)
    revalidated = []
    if revalidate:
        revalidated = _revalidate(chosen, on, gpu_index, echo=not as_json)
        problems += sum(not r.ok for r in revalidated)
    if as_json:
        echo_json({"files": lines, "revalidated": [{"file": str(r.path), "bucket": r.bucket, "part": r.part,
                                                    "ok": r.ok, "validated": r.record} for r in revalidated],
                   "problems": problems})
    if problems:
        raise SystemExit(1)


def _revalidate(folders: list[Path], on: Optional[str], device: int, *, echo: bool) -> list:
    """Revalidate the profiles of this GPU (--on gpu) or of every GPU (interpreter)."""
    from ..gpu import current_gpu
    from ..tuning.revalidate import revalidate_file
    from .group import CliError
    gpu = current_gpu()
    on = on or ("gpu" if gpu else "interpreter")
    if on == "gpu" and not gpu:
        raise CliError("--on gpu needs a CUDA GPU; none is visible (use --on interpreter)")
    done = []
    for folder in folders:
        for path in sorted(Path(folder).glob("*/*.json")):
            if path.name == "hardware.json" or (on == "gpu" and path.parent.name != gpu):
                continue
            done += revalidate_file(path, gpu=on == "gpu", device=device,
                                    report=lambda r: echo and click.echo("  " + r.line()))
    return done
