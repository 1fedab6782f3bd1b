"""`m2tune calibrate` and `m2tune predict`: the performance model's hardware profile and its use."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from .. import variants
from ..problem import shape as named_shape
from .group import CliError, main
from .options import Bar, echo_json, gpu_option, json_option, parse_params, profiles_out, shape_option


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Profiles folder to write <gpu-slug>/hardware.json into [default: the first "
                   "M2TUNE_PROFILES folder, else ./profiles].")
@click.option("--refit", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Refit the constants of this hardware.json from its own raw rows (no GPU needed).")
@click.option("--fwd-configs", default=48, show_default=True, type=click.IntRange(min=1), help="Forward configs to time.")
@click.option("--bwd-configs", default=36, show_default=True, type=click.IntRange(min=1), help="Backward configs to time.")
@click.option("--seed", default=0, show_default=True)
def calibrate(out: Optional[Path], refit: Optional[Path], fwd_configs: int, bwd_configs: int, seed: int) -> None:
    """Measure this GPU and write the performance model's hardware profile."""
    from ..model import calibrate as cal
    from ..model.hardware import HardwareProfileError
    if refit:
        try:
            hw = cal.refit(refit)
        except HardwareProfileError as exc:
            raise CliError(str(exc)) from None
        refit.write_text(hw.to_json())
        path = refit
    else:
        import torch
        if not torch.cuda.is_available():
            raise CliError("calibrate measures a GPU and none is visible here (--refit works without one)")
        bar = Bar()
        try:
            hw = cal.calibrate(counts=cal.default_counts(fwd_configs, bwd_configs), seed=seed, progress=bar)
        finally:
            bar.close()
        path = hw.save(profiles_out(out))
    for line in cal.summary(hw):
        click.echo(line)
    click.echo(f"wrote {path}")


@main.command()
@shape_option()
@click.option("--variant", default="m2rnn_fwd", show_default=True, type=click.Choice(variants.names()))
@gpu_option("GPU whose hardware profile prices the config (e.g. nvidia-h200) [default: this GPU].")
@click.option("--config", "config_text", default=None, help="Parameters that differ from the default, "
              "e.g. BLOCK_K=32,MATMUL=dot_tf32x3.")
@json_option()
def predict(shape_name: str, variant: str, gpu: Optional[str], config_text: Optional[str], as_json: bool) -> None:
    """Predicted time of one config and the term that binds it (no GPU needed)."""
    from dataclasses import asdict

    from ..model import perfmodel
    from ..model.hardware import HardwareProfileError, resolve_target
    from ..resources import data_dir
    spec = variants.spec(variant)
    params = parse_params(config_text)
    unknown = sorted(set(params) - set(spec.PARAMS))
    if unknown:
        raise CliError(f"--config: {variant} has no parameter {', '.join(unknown)} (known: {', '.join(spec.PARAMS)})")
    config = spec.config(params)
    problem = named_shape(shape_name)
    why = spec.check(problem, config)
    if why:
        raise CliError(f"--config {config.short()}: {why}")
    try:
        hw = resolve_target(gpu, [data_dir("profiles")])
    except HardwareProfileError as exc:
        raise CliError(str(exc)) from None
    try:
        pred = perfmodel.predict(problem, config, hw)
    except perfmodel.ModelError as exc:
        raise CliError(f"--config {config.short()}: {exc}") from None
    if as_json:
        g = pred.geometry
        echo_json({"gpu": hw.slug, "shape": shape_name, "config": config.as_dict(), "time_ms": pred.time_ms,
                   "step_us": pred.step_us, "bound": pred.bound, "latency_us": pred.latency_us,
                   "throughput_us": pred.throughput_us, "memory_ms": pred.memory_ms,
                   "compute_ms": pred.compute_ms, "latency_terms": pred.latency_terms,
                   "geometry": asdict(g) if hasattr(g, "__dataclass_fields__") else str(g)})
        return
    click.echo(f"predicted for {hw.name}: {pred.time_ms:.3f} ms ({pred.step_us:.3f} us/step), bound by {pred.bound}")
    g = pred.geometry
    click.echo(f"  {g.programs} programs, {g.occupancy} per SM (limit: {g.occupancy_limit}, "
               f"{g.regs} registers{'' if g.regs_measured else ' estimated'}), {g.waves} wave(s)")
    click.echo(f"  per step: latency {pred.latency_us:.3f} us, throughput {pred.throughput_us:.3f} us; "
               f"memory {pred.memory_ms:.3f} ms, compute {pred.compute_ms:.3f} ms in all")
    for name, us in sorted(pred.latency_terms.items(), key=lambda kv: -kv[1]):
        if us > 0:
            click.echo(f"    {name:<18} {us:.4f} us")
