"""What GPU this is, named the same way everywhere (profiles, results, lookups)."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Optional


def slug(name: str) -> str:
    """'NVIDIA H200' -> 'nvidia-h200'; lower case, runs of other characters become '-'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@dataclass(frozen=True)
class GpuInfo:
    name: str
    slug: str
    capability: str           # "9.0"
    sm_count: int
    total_memory_gib: float


def gpu_info(device: int = 0) -> Optional[GpuInfo]:
    import torch
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(device)
    return GpuInfo(props.name, slug(props.name), f"{props.major}.{props.minor}",
                   props.multi_processor_count, round(props.total_memory / 2**30, 1))


def gpu_state(device: int = 0) -> dict[str, Any]:
    """SM clock (MHz) and temperature (C) where NVML can be read; empty otherwise."""
    import torch
    state: dict[str, Any] = {}
    for key, read in (("sm_clock_mhz", torch.cuda.clock_rate), ("temperature_c", torch.cuda.temperature)):
        try:
            state[key] = read(device)
        except Exception:       # no NVML in this environment: leave the field out
            pass
    return state


def environment() -> dict[str, Any]:
    """Versions and device, recorded next to every measurement."""
    import platform

    import torch
    import triton

    from . import __version__
    info = gpu_info()
    return {
        "m2tune": __version__,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "gpu": asdict(info) if info else None,
        "cuda": torch.version.cuda,
    }
