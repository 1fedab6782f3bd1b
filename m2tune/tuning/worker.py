"""One trial in an isolated worker process, with a time limit; every failure gets a category.

A candidate kernel can do worse than raise: it can segfault the interpreter,
hit an illegal address that poisons the CUDA context for good, or spin
forever. So each trial runs in a child process that the tuner can kill:

    parent: the kernel's check()    -> invalid-config, no process needed
    child:  validate vs float64     -> wrong-result / compile-error / out-of-resources / launch-error
            time at the full problem (GPU mode only)
    parent: child died              -> crashed (exit code or signal), fresh child next time
            no answer in timeout_s  -> timeout, child (and its process group) killed, fresh child

The trial itself (request, result, what the child does) is in trial.py; this module is the
parent's side. A `Worker` keeps ONE child alive across trials (torch and triton are imported
once per worker, not per trial) and restarts it only when it died, hung, or
may hold a broken CUDA context. The child is started with the "spawn" method
so no CUDA state is ever forked, and its environment (CUDA_VISIBLE_DEVICES,
TRITON_INTERPRET) is fixed before its Python starts: CUDA reads the first when it
initialises, and Triton picks compiled-or-interpreted when a kernel module is
imported, so setting them later in the child would be too late to rely on.

This module imports neither torch nor triton itself; the child's functions do.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from typing import Any, Iterator, Optional

from .. import status
from .trial import GPU, INTERPRET, MODES, TrialRequest, TrialResult, check_request, child_main

# After these a GPU child is still trustworthy; anything else (a launch that raised, a compile
# error mid-way) may have left its CUDA context unusable, so it is replaced.
_CLEAN = (status.OK, status.INVALID_CONFIG, status.WRONG_RESULT)


class WorkerError(RuntimeError):
    """The worker process itself could not be started: an environment problem, not a candidate's."""


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
        process = ctx.Process(target=child_main, args=(child_conn, self.mode, os.getpid()),
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
