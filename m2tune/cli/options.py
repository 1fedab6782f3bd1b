"""Options several commands share, spelled once: the GPU, the study storage, JSON output."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import click

DEFAULT_STORAGE = "sqlite:///m2tune.db"     # tuning.storage.DEFAULT_URL, without importing optuna here


def gpu_option(help: str) -> Callable:
    """--gpu NAME: a GPU name or slug (nvidia-h200). `--target` is the same option's older name."""
    return click.option("--gpu", "--target", "gpu", default=None, metavar="NAME", help=help)


class ShapeName(click.ParamType):
    """A named shape (m2tune shapes) or an ad-hoc one, B=1,S=16384,K=64,V=16,N=132; kept as given."""
    name = "shape"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> str:
        from ..problem import shape
        try:
            shape(value)
        except (KeyError, ValueError) as exc:
            self.fail(str(exc).strip('"'), param, ctx)
        return value


def shape_option(**kw: Any) -> Callable:
    """--shape: a named shape or an ad-hoc B=..,S=..,K=..,V=..,N=.. (problem.parse_shape)."""
    return click.option("--shape", "shape_name", default="paper-7b", show_default=True, type=ShapeName(),
                        help="A named shape (m2tune shapes) or B=1,S=16384,K=64,V=16,N=132 "
                             "(optional Nq Nk Nv Nw Nf dtype shared_qk).", **kw)


def storage_option(help: str = "Optuna storage URL of the studies") -> Callable:
    return click.option("--storage", default=DEFAULT_STORAGE, show_default=True,
                        help=help + "; a postgresql:// URL shared by several hosts makes them work on one study.")


def json_option() -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of text.")


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def profiles_out(out: Optional[Path]) -> Path:
    """Where export and calibrate write: --out, else the user override folder (M2TUNE_PROFILES, its
    first entry), else ./profiles. Never into an installed package."""
    import os

    from ..runtime import ENV_OVERRIDE
    if out is not None:
        return out
    first = next((p for p in os.environ.get(ENV_OVERRIDE, "").split(os.pathsep) if p), None)
    return Path(first) if first else Path("profiles")


def parse_params(text: Optional[str]) -> dict:
    """'BLOCK_K=32,MATMUL=dot_tf32x3' -> {'BLOCK_K': 32, 'MATMUL': 'dot_tf32x3'} (ints where they parse)."""
    params = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--config")
        value = value.strip()
        params[key.strip()] = int(value) if value.lstrip("-").isdigit() else value
    return params


class Bar:
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
