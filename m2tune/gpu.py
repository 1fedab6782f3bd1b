"""What GPU this is, named the same way everywhere (profiles, results, lookups), and its state."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Optional


# Marketing names and board variants of one chip share tuned configs. Keys are slugs of what the
# driver reports; values the folder name under profiles/.
ALIASES = {
    "nvidia-h200-nvl": "nvidia-h200",
    "nvidia-h200-141gb-hbm3e": "nvidia-h200",
    "nvidia-h100-80gb-hbm3": "nvidia-h100",
    "nvidia-h100-nvl": "nvidia-h100",
    "nvidia-h100-pcie": "nvidia-h100",
    "nvidia-h100-sxm5-80gb": "nvidia-h100",
    "nvidia-a100-sxm4-80gb": "nvidia-a100",
    "nvidia-a100-sxm4-40gb": "nvidia-a100",
    "nvidia-a100-80gb-pcie": "nvidia-a100",
    "nvidia-a100-pcie-40gb": "nvidia-a100",
    "nvidia-gh200-480gb": "nvidia-gh200",
}
# board suffixes the table does not list: form factor, memory size and type
_SUFFIX = re.compile(r"-(sxm\d?|pcie|nvl|\d+gb|hbm\d?e?)$")


def slug(name: str) -> str:
    """'NVIDIA H200' -> 'nvidia-h200'; lower case, runs of other characters become '-'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def canonical_gpu(name: str) -> str:
    """'NVIDIA H200 NVL' -> 'nvidia-h200'; a name already in slug form passes through."""
    s = slug(name)
    while s not in ALIASES:
        shorter = _SUFFIX.sub("", s)
        if shorter == s:
            break
        s = shorter
    return ALIASES.get(s, s)


def current_gpu(device: Any = None) -> Optional[str]:
    """Canonical slug of the CUDA device (current one by default), None without CUDA."""
    import torch
    if not torch.cuda.is_available():
        return None
    return canonical_gpu(torch.cuda.get_device_name(device))


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
