"""Registry of kernel templates: variant name -> module in kernel_variants/.

The only place that imports kernel_variants, and lazily: a template module
builds @triton.jit functions at import, and Triton decides at that moment
whether they run compiled or in its interpreter (TRITON_INTERPRET). So the
backend is chosen here, once, before the first template is imported.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

REGISTRY: dict[str, str] = {
    "m2rnn_fwd": "kernel_variants.m2rnn_fwd",
    "m2rnn_bwd": "kernel_variants.m2rnn_bwd",
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


def register(name: str, module_path: str) -> None:
    """Make an extra template module loadable by name (tests' planted variants, experiments).

    Explicit, so nothing outside the caller's code decides what runs. Registering
    the same pair again is harmless; rebinding a name to another module is refused.
    """
    known = REGISTRY.get(name)
    if known is not None and known != module_path:
        raise ValueError(f"variant {name!r} is already registered as {known!r}, not {module_path!r}")
    REGISTRY[name] = module_path


def names() -> list[str]:
    return sorted(REGISTRY)


def load(name: str) -> ModuleType:
    try:
        module = REGISTRY[name]
    except KeyError:
        raise UnknownVariant(f"unknown kernel variant {name!r}; known: {', '.join(names())}") from None
    return importlib.import_module(module)


def source_hash(name: str) -> str:
    """sha256 (16 hex digits) of a variant's source and the kernel_variants modules it imports.

    Tuned configs record it: a config tuned for other kernel source is stale (issue: export).
    """
    import hashlib
    import re

    module = load(name)
    seen: list[str] = []
    todo = [module.__name__]
    while todo:
        mod_name = todo.pop()
        if mod_name in seen:
            continue
        seen.append(mod_name)
        source = _source(mod_name)
        todo += re.findall(r"^from (kernel_variants\.\w+) import", source.decode(), flags=re.M)
    digest = hashlib.sha256()
    for mod_name in sorted(seen):
        digest.update(_source(mod_name))
    return digest.hexdigest()[:16]


def _source(module_name: str) -> bytes:
    with open(importlib.import_module(module_name).__file__, "rb") as fh:
        return fh.read()
