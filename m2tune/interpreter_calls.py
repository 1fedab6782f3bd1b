"""Device-function calls in Triton's interpreter without re-patching the language each time.

Triton's interpreter (3.6 to 3.9) patches `triton.language` once per kernel launch (a scope it
restores when the kernel returns) and again at every call of a @triton.jit helper from inside the
kernel. The second patching finds the builtins already replaced, so it changes nothing, but it walks
`inspect.getmembers` of four modules each time: profiled on a lean-backward test (S=37), 13 of its
32 s were spent there, 12,576 helper calls. `install()` wraps the interpreter's launch
(GridExecutor.__call__) to know when a launch's own patch is live, and makes a helper call skip the
patching while it is and covers the language modules the helper sees; everything else (the launch's
patch and its restore, a helper of a module that sees another language module) runs as Triton wrote
it. variants.load() installs it when kernels run in the interpreter; it is idempotent, and where
Triton's interpreter is not laid out as expected it installs nothing and logs why.
"""
from __future__ import annotations

import inspect
import logging
import threading
from typing import Any, Optional

log = logging.getLogger(__name__)

_installed: Optional[bool] = None
_lock = threading.Lock()


def _languages(fn: Any, tl: Any) -> frozenset:
    # the modules Triton's _patch_lang would patch for fn: triton.language and its core, by identity
    return frozenset(id(v) for v in fn.__globals__.values() if inspect.ismodule(v) and v in (tl, tl.core))


def install() -> bool:
    """Install the shim into triton.runtime.interpreter (once); True when it is in place."""
    global _installed
    with _lock:
        if _installed is None:
            _installed = _install()
        return _installed


def _install() -> bool:
    try:
        import triton.language as tl
        from triton.runtime import interpreter
    except ImportError as exc:                      # pragma: no cover - triton is a dependency
        log.info("interpreter shim not installed: %s", exc)
        return False
    original = getattr(interpreter, "_patch_lang", None)
    grid_cls = getattr(interpreter, "GridExecutor", None)
    scope_cls = getattr(interpreter, "_LangPatchScope", None)
    if original is None or grid_cls is None or scope_cls is None or not callable(getattr(grid_cls, "__call__", None)):
        log.info("interpreter shim not installed: this Triton's interpreter has no "
                 "_patch_lang / GridExecutor / _LangPatchScope")
        return False
    if getattr(original, "_m2tune_shim", False):
        return True
    # one entry per launch running (a launch inside a launch is not expected, but stays correct):
    # the languages its own patch covers, None until that patch is made
    # (per thread: Triton's own patching is process-wide, the shim adds no sharing of its own)
    local = threading.local()
    grid_call = grid_cls.__call__

    def stack() -> list[Optional[frozenset]]:
        if not hasattr(local, "launches"):
            local.launches = []
        return local.launches

    def run_launch(self: Any, *args: Any, **kwargs: Any) -> Any:
        launches = stack()
        launches.append(None)
        try:
            return grid_call(self, *args, **kwargs)
        finally:
            launches.pop()

    def patch_lang(fn: Any) -> Any:
        launches = stack()
        langs = _languages(fn, tl)
        if launches and launches[-1] is not None and langs <= launches[-1]:
            return scope_cls()                  # a helper called inside the launch: already patched
        scope = original(fn)
        if launches:
            # the launch's own patch (restored when it returns), or a helper's of other modules
            # (tl.sum's module sees triton.language.core): Triton never restores a helper's patch,
            # so those modules stay patched for the rest of the launch too
            launches[-1] = langs if launches[-1] is None else launches[-1] | langs
        return scope

    patch_lang._m2tune_shim = True
    patch_lang._m2tune_original = original
    run_launch._m2tune_original = grid_call
    interpreter._patch_lang = patch_lang
    grid_cls.__call__ = run_launch
    return True


def uninstall() -> None:
    """Put Triton's own _patch_lang back (tests)."""
    global _installed
    with _lock:
        from triton.runtime import interpreter
        current = getattr(interpreter, "_patch_lang", None)
        if getattr(current, "_m2tune_shim", False):
            interpreter._patch_lang = current._m2tune_original
            interpreter.GridExecutor.__call__ = interpreter.GridExecutor.__call__._m2tune_original
        _installed = None
