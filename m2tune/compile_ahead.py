"""Compile a training step's backward kernel while its forward compiles and runs.

The first step of a fresh process compiles both kernels (Triton's on-disk cache is empty): one after
the other, since the backward is only called once the forward is done. Triton compiles in C++ and in
a ptxas subprocess, so a second thread compiling the backward overlaps the forward's compile. The op
starts that thread at the forward's first launch for a plan (its arguments are meta tensors: only
dtypes and shapes matter to the compiler) and the backward waits for it before its own first launch,
so it never compiles the same kernel twice.

One in-flight compile per key (the op's plan), kept in this process; a compile that fails is
forgotten: the backward then compiles at its launch and reports any error there, as it always did.
"""
from __future__ import annotations

import threading
from typing import Callable

_lock = threading.Lock()
_started: dict[str, threading.Thread] = {}
_errors: dict[str, str] = {}


def start(key: str, compile_fn: Callable[[], None]) -> bool:
    """Run compile_fn in a background thread, once per key; False when the key was started before."""
    with _lock:
        if key in _started:
            return False

        def run() -> None:
            try:
                compile_fn()
            except Exception as exc:       # compiled (and reported) again at the real launch
                with _lock:
                    _errors[key] = f"{type(exc).__name__}: {exc}"
        thread = threading.Thread(target=run, name="m2tune-compile-ahead", daemon=True)
        _started[key] = thread
    thread.start()
    return True


def wait(key: str) -> None:
    """Block until the compile started for key (if any) is done."""
    with _lock:
        thread = _started.get(key)
    if thread is not None and thread is not threading.current_thread():
        thread.join()


def error(key: str) -> str | None:
    """Why the compile started for key failed, if it did (the backward compiles at its launch then)."""
    with _lock:
        return _errors.get(key)


def forget() -> None:
    """Drop the record of started compiles (tests; a new process starts empty anyway)."""
    with _lock:
        threads = list(_started.values())
        _started.clear()
        _errors.clear()
    for thread in threads:
        thread.join()
