"""Run one variant config on one problem as a timed callable.

What calibration, the model-accuracy benchmark and the tuner's timing share: inputs in the
problem's dtype on the device, output buffers, and for a backward variant the forward's
checkpoints (made once, outside the timed call) so that only the backward is timed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from .. import variants
from ..inputs import TORCH_DTYPES, cast, make_inputs
from ..problem import KernelConfig, Problem
from .timing import Timing, time_cuda


@dataclass
class Prepared:
    run: Callable[[], None]
    info: dict[str, Any]           # compiled kernel's registers / shared memory (after the first run)


def checkpoint_forward(backward: str, problem: Problem, *, interpreter: bool = False) -> KernelConfig:
    """A valid forward config to make backward kernel `backward`'s checkpoints on `problem`: exact
    products, so the backward is validated and timed on fp32-exact states (spec.checkpoint_config)."""
    forward = variants.spec(variants.spec(backward).checkpoints_from)
    return forward.checkpoint_config(problem, interpreter=interpreter)


def prepare(problem: Problem, config: KernelConfig, *, device: str = "cuda", seed: int = 0,
            forward_config: Optional[KernelConfig] = None,
            gradient_clipping: Optional[float] = None, variant_module: Any = None,
            ckpt_every: int = 0) -> Prepared:
    """A callable that launches `config` once on fresh inputs of `problem` (compiled on first call).

    A backward kernel gets checkpoints from `forward_config` (default: checkpoint_forward) made
    here, once, outside the callable. variant_module: run this kernel module instead of the
    registered one (an edited copy, as the ablation benchmark times). ckpt_every: a forward also
    stores its checkpoints every that many steps (as the training forward does).
    """
    module = variant_module or variants.load(config.variant)
    backward = variants.spec(config.variant).role == "backward"
    x = cast(make_inputs(problem, seed=seed, device=device), TORCH_DTYPES[problem.dtype])
    lead = (1, problem.tokens) if problem.is_varlen else (problem.B, problem.S)
    y = torch.empty(*lead, problem.N, problem.V, dtype=x.v.dtype, device=device)
    h_T = torch.empty(problem.B, problem.N, problem.K, problem.V, dtype=torch.float32, device=device)
    info: dict[str, Any] = {}
    if not backward:
        if ckpt_every:
            return Prepared(lambda: module.launch(problem, config, x, y, h_T, info=info, ckpt_every=ckpt_every), info)
        return Prepared(lambda: module.launch(problem, config, x, y, h_T, info=info), info)
    fwd_config = forward_config or checkpoint_forward(config.variant, problem)
    ckpt = variants.load(fwd_config.variant).launch(problem, fwd_config, x, y, h_T, ckpt_every=config["CKPT"])
    dy, dh_T = torch.randn_like(y), torch.randn_like(h_T)
    return Prepared(lambda: module.launch_backward(problem, config, x, ckpt, dy, dh_T, info=info,
                                                   gradient_clipping=gradient_clipping), info)


def time_config(problem: Problem, config: KernelConfig, *, reps: int = 10, warmup: int = 2,
                seed: int = 0, max_seconds: float = 10.0) -> tuple[Timing, dict[str, Any]]:
    """CUDA-event timing of one config (inputs from HBM: L2 flushed), and its compiled resources."""
    prepared = prepare(problem, config, seed=seed)
    timing = time_cuda(prepared.run, warmup=warmup, reps=reps, max_seconds=max_seconds)
    return timing, dict(prepared.info)


def describe_failure(exc: BaseException) -> Optional[str]:
    from .. import status
    return f"{status.classify(exc)}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
