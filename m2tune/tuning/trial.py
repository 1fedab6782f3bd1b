"""One trial as the worker process runs it: the request, the result, and the child's side.

    parent: check_request(request) -> invalid-config, no process needed (worker.py)
    child:  validate vs float64     -> wrong-result / compile-error / out-of-resources / launch-error
            time at the full problem (GPU mode only)

The child's functions import torch and the kernels; importing this module imports neither (the
parent screens candidates with the kernels' plain-Python specs). Every exception inside a trial is
classified here and sent back as a result, never raised to the parent.
"""
from __future__ import annotations

import math
import os
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from types import ModuleType
from typing import Any, Callable, Mapping, Optional

from .. import status, variants
from ..problem import KernelConfig, Problem

GPU = "gpu"              # compile, validate on the GPU, time at the full problem
INTERPRET = "interpret"  # Triton interpreter on the CPU, validate only (the caller passes a small problem)
MODES = (GPU, INTERPRET)

_MAX_MESSAGE = 4000


@dataclass(frozen=True)
class TrialRequest:
    variant: str
    problem: Problem
    config: KernelConfig
    mode: str = GPU
    device: Optional[int] = 0                      # GPU index as the parent sees it; None in interpret mode
    seed: int = 0
    reps: int = 20
    warmup: int = 3
    forward_config: Optional[KernelConfig] = None  # backward variants: the forward making checkpoints
    gradient_clipping: Optional[float] = None      # backward timing (validation: the plan's clip cases)
    # kernels outside the registry, registered first: name -> (spec "module:ATTR", kernel module)
    extra_variants: Mapping[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class TrialResult:
    status: str
    message: Optional[str] = None
    # output -> {"error", "limit", "reference", "length", "finite"} of its worst check (vs float64)
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the validation plan it was checked on (measure/plan.py Plan.record) and the validator's notes
    validated: dict[str, Any] = field(default_factory=dict)
    median_ms: Optional[float] = None
    p20_ms: Optional[float] = None
    p80_ms: Optional[float] = None
    reps: Optional[int] = None
    compile_s: Optional[float] = None      # first launch incl. compile (interpreter: its wall time)
    wall_s: Optional[float] = None         # the trial as the parent saw it, worker start-up excluded
    gpu: dict[str, Any] = field(default_factory=dict)        # m2tune.gpu.gpu_state after timing
    resources: Optional[dict[str, Any]] = None                # compiled kernel's n_regs, shared, ... (GPU)

    @property
    def ok(self) -> bool:
        return self.status == status.OK

    def as_dict(self) -> dict[str, Any]:
        """Plain types only; NaN and infinities become None so strict JSON can hold it."""
        return _finite(asdict(self))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ---------------------------------------------------------------- shared by parent and child

def _register(request: TrialRequest) -> None:
    for name, (spec_ref, kernel_path) in request.extra_variants.items():
        variants.register(name, spec_ref, kernel_path)


INTERPRETED_AS = "TANH=exact (the interpreter cannot run PTX tanh.approx)"


def interpretable(config: KernelConfig) -> tuple[KernelConfig, Optional[str]]:
    """The config the Triton interpreter checks in its place, and the note saying so (None when it
    is the config itself): PTX tanh.approx cannot run there, the exact tanh stands in for it."""
    if config.get("TANH") == "approx":
        return config.with_params(TANH="exact"), INTERPRETED_AS
    return config, None


def _is_training(request: TrialRequest) -> bool:
    return variants.spec(request.variant).role == "backward"


def _forward_config(request: TrialRequest, problem: Optional[Problem] = None) -> KernelConfig:
    from ..measure.launch import checkpoint_forward
    return request.forward_config or checkpoint_forward(request.variant, problem or request.problem,
                                                        interpreter=request.mode == INTERPRET)


def _plan(request: TrialRequest):
    from ..measure.plan import plan_for
    return plan_for(request.variant, request.problem, request.config, interpreter=request.mode == INTERPRET)


def check_request(request: TrialRequest) -> Optional[str]:
    """Why the trial cannot run at all: the variant's check on the target and on every problem of
    its validation plan, and the checkpointing forward's for a backward."""
    from ..measure.plan import unfit_reason
    _register(request)
    interpreter = request.mode == INTERPRET
    reason = variants.spec(request.variant).check(request.problem, request.config, interpreter=interpreter)
    if reason is None:
        plan = _plan(request)
        reason = unfit_reason(plan, request.config)
        if reason is None and _is_training(request):
            fwd = _forward_config(request, plan.cases[0].problem)      # what _validate runs
            for case in plan.cases:
                why = variants.spec(fwd.variant).check(case.problem, fwd, interpreter=interpreter)
                if why:
                    return f"forward config ({fwd.short()}) on validation case {case.name}: {why}"
    return reason


# ---------------------------------------------------------------- the child

def child_main(conn: Connection, mode: str, parent_pid: int) -> None:
    """Entry of the worker process: import once, say ready, then run trials until told to stop."""
    os.setsid()                   # own process group, so a kill also takes whatever it started
    _exit_with_parent(parent_pid)
    try:
        import importlib

        import torch
        # torch, triton's users, the reference and the tolerances: imported once per worker
        importlib.import_module("m2tune.measure.validate")
        if mode == GPU:
            torch.empty(1, device="cuda")   # the CUDA context, created outside any trial's clock
    except Exception as exc:
        conn.send(("failed", _describe(exc)))
        return
    conn.send(("ready", os.getpid()))
    from ..reuse import reusing
    with reusing():               # the inputs and references every trial of a study shares, made once
        while True:
            try:
                request = conn.recv()
            except EOFError:      # the parent is gone
                return
            if request is None:
                return
            conn.send(_run_trial(request))


def _exit_with_parent(parent_pid: int) -> None:
    # A child hung in a trial never reads the pipe's EOF; without this it would outlive a
    # tuner that was killed, holding its GPU.
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)
    threading.Thread(target=watch, name="m2tune-parent-watch", daemon=True).start()


def _run_trial(request: TrialRequest) -> dict[str, Any]:
    """Validate, then time; any exception is classified here, never raised to the parent."""
    out: dict[str, Any] = {}
    try:
        _register(request)
        module = variants.load(request.variant)
        device = "cuda" if request.mode == GPU else "cpu"
        result, compile_s, plan = _validate(request, module, device)
        out.update(status=result.status, message=result.reason(), errors=_worst_errors(result),
                   compile_s=compile_s, validated={**plan.record(), "notes": result.notes})
        if result.ok and request.mode == GPU:
            out.update(_time(request, module, device))
    except Exception as exc:
        out.update(status=status.classify(exc), message=_describe(exc))
    return out


class _FirstCall:
    """A candidate whose first call (compile and first launch, synchronised) is timed."""

    def __init__(self, fn: Callable, device: str):
        self.fn, self.device, self.seconds = fn, device, None

    def __call__(self, *args: Any, **kw: Any) -> Any:
        if self.seconds is not None:
            return self.fn(*args, **kw)
        t0 = time.perf_counter()
        value = self.fn(*args, **kw)
        _sync(self.device)
        self.seconds = time.perf_counter() - t0
        return value


def _sync(device: str) -> None:
    if device != "cpu":
        import torch
        torch.cuda.synchronize()


def _validate(request: TrialRequest, module: ModuleType, device: str):
    """The candidate on every case of its validation plan: (result, first-call seconds, plan)."""
    from ..measure import plan as plans, validate
    plan = _plan(request)
    if _is_training(request):
        # one checkpointing forward for every case (check_request proved it fits each)
        fwd = _forward_config(request, plan.cases[0].problem)
        candidate = _FirstCall(validate.variant_training(variants.load(fwd.variant), fwd, module, request.config),
                               device)
    else:
        candidate = _FirstCall(validate.variant_forward(module, request.config), device)
    result = plans.run(plan, request.config, candidate, seed=request.seed, device=device)
    return result, candidate.seconds, plan


def _worst_errors(result) -> dict[str, dict[str, Any]]:
    """Per output, the check closest to (or furthest past) its limit over the lengths."""
    def badness(c) -> float:
        ratio = c.e_cand / c.limit if c.limit > 0 else math.inf
        return math.inf if not c.finite or math.isnan(ratio) else ratio
    worst: dict[str, Any] = {}
    for c in result.checks:
        if c.name not in worst or badness(c) > badness(worst[c.name]):
            worst[c.name] = c
    return {name: {"error": c.e_cand, "limit": c.limit, "reference": c.e_ref, "length": c.length,
                   "case": c.case, "finite": c.finite} for name, c in worst.items()}


def _time(request: TrialRequest, module: ModuleType, device: str) -> dict[str, Any]:
    """CUDA-event timing of the candidate's launch at the full problem (backward: the backward alone),
    and the compiled kernel's registers and shared memory."""
    from ..gpu import gpu_state
    from ..measure.launch import prepare
    from ..measure.timing import time_cuda
    forward = _forward_config(request) if _is_training(request) else None
    prepared = prepare(request.problem, request.config, device=device, seed=request.seed + 1,
                       forward_config=forward, gradient_clipping=request.gradient_clipping)
    t = time_cuda(prepared.run, warmup=request.warmup, reps=request.reps)
    return dict(median_ms=t.median_ms, p20_ms=t.p20_ms, p80_ms=t.p80_ms, reps=t.reps, gpu=gpu_state(0),
                resources=dict(prepared.info) or None)


def _describe(exc: BaseException) -> str:
    """The exception and where it was raised: enough to find the failing line from a trial record."""
    where = traceback.extract_tb(exc.__traceback__)
    at = f" (at {where[-1].filename}:{where[-1].lineno})" if where else ""
    text = f"{type(exc).__name__}: {exc}"
    return text[:_MAX_MESSAGE] + at
