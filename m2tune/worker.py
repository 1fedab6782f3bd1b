"""One trial in an isolated worker process, with a time limit; every failure gets a category.

A candidate kernel can do worse than raise: it can segfault the interpreter,
hit an illegal address that poisons the CUDA context for good, or spin
forever. So each trial runs in a child process that the tuner can kill:

    parent: check(problem, config)  -> invalid-config, no process needed
    child:  validate vs float64     -> wrong-result / compile-error / out-of-resources / launch-error
            time at the full problem (GPU mode only)
    parent: child died              -> crashed (exit code or signal), fresh child next time
            no answer in timeout_s  -> timeout, child (and its process group) killed, fresh child

A `Worker` keeps ONE child alive across trials (torch and triton are imported
once per worker, not per trial) and restarts it only when it died, hung, or
may hold a broken CUDA context. The child is started with the "spawn" method
so no CUDA state is ever forked, and its environment (CUDA_VISIBLE_DEVICES,
TRITON_INTERPRET) is fixed before its Python starts: importing this module's
package already imports torch, and Triton picks compiled-or-interpreted when a
kernel module is imported, so setting them later in the child would be too late
to rely on.

This module imports neither torch nor triton itself; the child's functions do.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from types import ModuleType
from typing import Any, Callable, Iterator, Mapping, Optional

from . import status, variants
from .problem import KernelConfig, Problem

GPU = "gpu"              # compile, validate on the GPU, time at the full problem
INTERPRET = "interpret"  # Triton interpreter on the CPU, validate only (the caller passes a small problem)
MODES = (GPU, INTERPRET)

# After these a GPU child is still trustworthy; anything else (a launch that raised, a compile
# error mid-way) may have left its CUDA context unusable, so it is replaced.
_CLEAN = (status.OK, status.INVALID_CONFIG, status.WRONG_RESULT)
_MAX_MESSAGE = 4000


class WorkerError(RuntimeError):
    """The worker process itself could not be started: an environment problem, not a candidate's."""


@dataclass(frozen=True)
class TrialRequest:
    variant: str
    problem: Problem
    config: KernelConfig
    mode: str = GPU
    device: Optional[int] = 0                      # GPU index as the parent sees it; None in interpret mode
    seed: int = 0
    lengths: Optional[tuple[int, ...]] = None      # validation lengths; None: validate.default_lengths
    reps: int = 20
    warmup: int = 3
    forward_config: Optional[KernelConfig] = None  # backward variants: the forward making checkpoints
    gradient_clipping: Optional[float] = None      # backward validation
    extra_variants: Mapping[str, str] = field(default_factory=dict)   # name -> module, registered first


@dataclass
class TrialResult:
    status: str
    message: Optional[str] = None
    # output -> {"error", "limit", "reference", "length", "finite"} of its worst check (vs float64)
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
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
    for name, path in request.extra_variants.items():
        variants.register(name, path)


def _is_training(module: ModuleType) -> bool:
    return hasattr(module, "launch_backward")


def _forward_config(request: TrialRequest) -> KernelConfig:
    from .measure import checkpoint_forward
    return request.forward_config or checkpoint_forward(request.problem, interpreter=request.mode == INTERPRET)


def check_request(request: TrialRequest) -> Optional[str]:
    """Why the trial cannot run at all (the variant's check, and the forward's for a backward)."""
    _register(request)
    interpreter = request.mode == INTERPRET
    module = variants.load(request.variant)
    reason = module.check(request.problem, request.config, interpreter=interpreter)
    if reason is None and _is_training(module):
        fwd = _forward_config(request)
        why = variants.load(fwd.variant).check(request.problem, fwd, interpreter=interpreter)
        if why:
            reason = f"forward config ({fwd.short()}): {why}"
    return reason


# ---------------------------------------------------------------- the child

def _child_main(conn: Connection, mode: str, parent_pid: int) -> None:
    """Entry of the worker process: import once, say ready, then run trials until told to stop."""
    os.setsid()                   # own process group, so a kill also takes whatever it started
    _exit_with_parent(parent_pid)
    try:
        import importlib

        import torch
        # torch, triton's users, the reference and the tolerances: imported once per worker
        importlib.import_module("m2tune.validate")
        if mode == GPU:
            torch.empty(1, device="cuda")   # the CUDA context, created outside any trial's clock
    except Exception as exc:
        conn.send(("failed", _describe(exc)))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            request = conn.recv()
        except EOFError:          # the parent is gone
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
        result, compile_s = _validate(request, module, device)
        out.update(status=result.status, message=result.reason(), errors=_worst_errors(result),
                   compile_s=compile_s)
        if result.ok and request.mode == GPU:
            out.update(_time(request, module, device))
    except Exception as exc:
        out.update(status=status.classify(exc), message=_describe(exc))
    return out


class _FirstCall:
    """A candidate whose first call (compile and first launch, synchronised) is timed."""

    def __init__(self, fn: Callable, device: str):
        self.fn, self.device, self.seconds = fn, device, None

    def __call__(self, *args: Any) -> Any:
        if self.seconds is not None:
            return self.fn(*args)
        t0 = time.perf_counter()
        value = self.fn(*args)
        _sync(self.device)
        self.seconds = time.perf_counter() - t0
        return value


def _sync(device: str) -> None:
    if device != "cpu":
        import torch
        torch.cuda.synchronize()


def _validate(request: TrialRequest, module: ModuleType, device: str):
    from . import validate
    kw = dict(seed=request.seed, device=device, lengths=request.lengths)
    if _is_training(module):
        fwd = _forward_config(request)
        train = _FirstCall(validate.variant_training(variants.load(fwd.variant), fwd, module, request.config),
                           device)
        result = validate.validate_training(request.problem, train, clip=request.gradient_clipping, **kw)
        return result, train.seconds
    forward = _FirstCall(validate.variant_forward(module, request.config), device)
    return validate.validate_forward(request.problem, forward, **kw), forward.seconds


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
                   "finite": c.finite} for name, c in worst.items()}


def _time(request: TrialRequest, module: ModuleType, device: str) -> dict[str, Any]:
    """CUDA-event timing of the candidate's launch at the full problem (backward: the backward alone),
    and the compiled kernel's registers and shared memory."""
    from .gpu import gpu_state
    from .measure import prepare
    from .timing import time_cuda
    prepared = prepare(request.problem, request.config, device=device, seed=request.seed + 1,
                       forward_config=_forward_config(request), gradient_clipping=request.gradient_clipping)
    t = time_cuda(prepared.run, warmup=request.warmup, reps=request.reps)
    return dict(median_ms=t.median_ms, p20_ms=t.p20_ms, p80_ms=t.p80_ms, reps=t.reps, gpu=gpu_state(0),
                resources=dict(prepared.info) or None)


def _describe(exc: BaseException) -> str:
    """The exception and where it was raised: enough to find the failing line from a trial record."""
    where = traceback.extract_tb(exc.__traceback__)
    at = f" (at {where[-1].filename}:{where[-1].lineno})" if where else ""
    text = f"{type(exc).__name__}: {exc}"
    return text[:_MAX_MESSAGE] + at


# ---------------------------------------------------------------- the parent

_ENV_LOCK = threading.Lock()    # os.environ is process-wide: one child start at a time


def _child_environment(mode: str, device: Optional[int]) -> dict[str, Optional[str]]:
    """Variables the child must see from its first instruction (None: unset)."""
    if mode == INTERPRET:
        # no GPU at all: the interpreter runs on the CPU and must not touch a GPU others time on
        return {"TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d for d in visible.split(",") if d] if visible else None
    if ids is not None and not 0 <= device < len(ids):
        raise ValueError(f"device {device} is not among CUDA_VISIBLE_DEVICES={visible!r}")
    # the child sees exactly one GPU, as cuda:0; device indices follow the parent's numbering
    return {"TRITON_INTERPRET": None, "CUDA_VISIBLE_DEVICES": ids[device] if ids else str(device)}


@contextmanager
def _environment(changes: dict[str, Optional[str]]) -> Iterator[None]:
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in changes}
        _set_env(changes)
        try:
            yield
        finally:
            _set_env(saved)


def _set_env(values: dict[str, Optional[str]]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _exit_description(code: Optional[int]) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class Worker:
    """One persistent child process for one device and mode; trials run one at a time.

    Not thread-safe: give each thread (each GPU) its own Worker.
    """

    def __init__(self, device: Optional[int] = None, mode: str = GPU, *, startup_timeout_s: float = 300.0):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == GPU and device is None:
            raise ValueError("a GPU worker needs a device index")
        self.device, self.mode, self.startup_timeout_s = device, mode, startup_timeout_s
        self.starts = 0                         # child processes started so far
        self._process: Optional[Any] = None
        self._conn: Optional[Connection] = None

    @property
    def pid(self) -> Optional[int]:
        """The current child's process id, None when none is running."""
        return self._process.pid if self._process is not None else None

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, request: TrialRequest, timeout_s: float) -> TrialResult:
        """One trial; timeout_s counts from the moment a ready child receives it."""
        if request.mode != self.mode or request.device != self.device:
            raise ValueError(f"request for {request.mode} device {request.device} sent to a "
                             f"{self.mode} worker on device {self.device}")
        t0 = time.perf_counter()
        reason = check_request(request)
        if reason:
            return TrialResult(status.INVALID_CONFIG, reason, wall_s=time.perf_counter() - t0)
        self._ensure_started()
        t0 = time.perf_counter()
        result = self._exchange(request, timeout_s)
        result.wall_s = time.perf_counter() - t0
        if self.mode == GPU and result.status not in _CLEAN:
            self._kill()                        # its CUDA context may be broken: start afresh
        return result

    def close(self) -> None:
        """Ask the child to leave; kill it if it does not within a few seconds."""
        if self._process is None:
            return
        try:
            self._conn.send(None)
            self._process.join(5.0)
        except OSError:                         # the pipe is already broken: the child is gone
            pass
        self._kill()

    # ---- internals

    def _exchange(self, request: TrialRequest, timeout_s: float) -> TrialResult:
        process, conn = self._process, self._conn
        try:
            conn.send(request)
        except OSError:                         # died between trials; reported below as a crash
            pass
        ready = wait([conn, process.sentinel], timeout_s)
        if not ready:
            self._kill()
            return TrialResult(status.TIMEOUT, f"no result within {timeout_s:g} s; worker killed")
        reply = None
        if conn in ready:
            try:
                reply = conn.recv()
            except (EOFError, OSError):         # the pipe closed: the child died mid-trial
                pass
        if reply is None:
            process.join(5.0)
            code = process.exitcode
            self._kill()
            return TrialResult(status.CRASHED, f"worker process died during the trial: "
                                               f"{_exit_description(code)}")
        return TrialResult(**reply)

    def _ensure_started(self) -> None:
        if self._process is not None and self._process.is_alive():
            return
        self._kill()                            # a child that died on its own between trials
        ctx = mp.get_context("spawn")           # never fork a process that may hold CUDA state
        conn, child_conn = ctx.Pipe()
        process = ctx.Process(target=_child_main, args=(child_conn, self.mode, os.getpid()),
                              name=f"m2tune-worker-{self.mode}-{self.device}", daemon=True)
        with _environment(_child_environment(self.mode, self.device)):
            process.start()
        child_conn.close()                      # only the child holds that end: its death reads as EOF
        self._process, self._conn = process, conn
        ready = wait([conn, process.sentinel], self.startup_timeout_s)
        message = None
        if conn in ready:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                pass
        if not (isinstance(message, tuple) and message[0] == "ready"):
            if message:
                detail = message[1]
            elif ready:
                process.join(5.0)
                detail = _exit_description(process.exitcode)
            else:
                detail = f"not ready within {self.startup_timeout_s:g} s"
            self._kill()
            raise WorkerError(f"{self.mode} worker on device {self.device} did not start: {detail}")
        self.starts += 1

    def _kill(self) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is None:
            return
        # exitcode reaps a dead child, after which its pid is no longer ours to signal
        if process.exitcode is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)   # the child leads its group (setsid)
            except (ProcessLookupError, PermissionError):
                pass                                      # it had not reached setsid yet
            process.kill()
        process.join(10.0)
        conn.close()
