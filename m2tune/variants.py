"""Registry of kernels: name -> its spec (plain Python) and its kernel module (Triton).

`spec(name)` reads what a kernel is (parameters, check(), geometry, defaults, model features)
without importing Triton or torch; `load(name)` imports the kernel module itself, lazily: a kernel
module builds @triton.jit functions at import, and Triton decides at that moment whether they run
compiled or in its interpreter (TRITON_INTERPRET), so the backend is chosen before the first load.
Code never branches on kernel names: it asks the spec (its `role`, its rules).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from . import kernel_hash

KERNELS = "m2tune.kernel_variants"


@dataclass(frozen=True)
class Variant:
    spec: str       # "package.module:ATTRIBUTE" of its KernelSpec
    kernel: str     # module path of its Triton code and launcher
    op: bool = False    # the m2rnn op may run it (bundled kernels); registered extras are tuning-only


REGISTRY: dict[str, Variant] = {
    "m2rnn_fwd": Variant(f"{KERNELS}.m2rnn.spec:FORWARD", f"{KERNELS}.m2rnn.fwd", op=True),
    "m2rnn_bwd": Variant(f"{KERNELS}.m2rnn.spec:BACKWARD", f"{KERNELS}.m2rnn.bwd", op=True),
    "m2rnn_bwd_lean": Variant(f"{KERNELS}.m2rnn.spec:LEAN_BACKWARD", f"{KERNELS}.m2rnn.bwd_lean", op=True),
}


class UnknownVariant(KeyError):
    pass


def cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def interpreting() -> bool:
    """True when kernels run in the Triton interpreter (set, or no GPU to compile for)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_interpreter_without_gpu() -> bool:
    """Select the Triton interpreter when there is no GPU. Call before load()."""
    if not cuda_available() and not interpreting():
        os.environ["TRITON_INTERPRET"] = "1"
    return interpreting()


def register(name: str, spec_ref: str, kernel_path: str) -> None:
    """Make an extra kernel loadable by name (tests' planted variants, experiments).

    Explicit, so nothing outside the caller's code decides what runs. Registering the same entry
    again is harmless; rebinding a name to another is refused.
    """
    entry = Variant(spec_ref, kernel_path)
    known = REGISTRY.get(name)
    if known is not None and known != entry:
        raise ValueError(f"variant {name!r} is already registered as {known}, not {entry}")
    REGISTRY[name] = entry


def names() -> list[str]:
    return sorted(REGISTRY)


def _entry(name: str) -> Variant:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownVariant(f"unknown kernel variant {name!r}; known: {', '.join(names())}") from None


def spec(name: str) -> Any:
    """The KernelSpec of kernel `name` (imports no Triton or torch for the bundled kernels)."""
    module, _, attr = _entry(name).spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def load(name: str) -> ModuleType:
    """The kernel module of `name`: `launch` (a forward) or `launch_backward` (a backward)."""
    module = importlib.import_module(_entry(name).kernel)
    if interpreting():
        from . import interpreter_calls
        interpreter_calls.install()        # its helper calls without Triton re-patching the language
    return module


def for_role(role: str) -> list[str]:
    """Names of the kernels the op may run for `role` ("forward" or "backward"), by name."""
    return [name for name in names() if REGISTRY[name].op and spec(name).role == role]


def source_hash(name: str) -> str:
    """The identity of kernel `name`'s code (m2tune/kernel_hash.py): what makes its tuned configs
    stale. Found and parsed, never imported: no Triton needed. Remembered per process while the
    files of the kernel's folder are unchanged (size and modification time)."""
    kernel = _entry(name).kernel
    found = importlib.util.find_spec(kernel)
    folder = os.path.dirname(found.origin) if found is not None and found.origin else None
    stamp = tuple((f, st.st_mtime_ns, st.st_size) for f in sorted(os.listdir(folder)) if f.endswith(".py")
                  for st in [os.stat(os.path.join(folder, f))]) if folder else None
    key = (kernel, folder, stamp)
    if key not in _HASHES:
        _HASHES[key] = kernel_hash.source_hash(kernel)
    return _HASHES[key]


_HASHES: dict[tuple, str] = {}
