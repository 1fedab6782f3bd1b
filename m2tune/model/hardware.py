"""A GPU's hardware profile: `profiles/<gpu-slug>/hardware.json`.

Written by `m2tune calibrate` (m2tune/model/calibrate.py) on the GPU itself, read by the
performance model (m2tune/model/perfmodel.py) anywhere, a laptop included. It holds

- what the driver reports (SMs, registers and shared memory per SM, clocks),
- what was measured (HBM bandwidth, bf16 and tf32 matrix rates), each with how,
- the raw step-time micro-benchmarks of the kernel templates, and
- the model constants fitted to them (kept next to the raw data so that a
  changed model can be refitted on the CPU: `m2tune calibrate --refit`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = 1
FILE = "hardware.json"


class HardwareProfileError(ValueError):
    pass


@dataclass(frozen=True)
class HardwareProfile:
    name: str                       # as the driver names it: "NVIDIA H200"
    slug: str                       # "nvidia-h200" (m2tune.gpu.slug)
    capability: str                 # "9.0"
    sm_count: int
    sm_clock_mhz: float             # max SM clock
    regs_per_sm: int                # 32-bit registers
    shared_per_sm: int              # bytes usable by blocks on one SM
    max_warps_per_sm: int
    max_blocks_per_sm: int
    hbm_gbps: float                 # measured, GB/s
    bf16_tflops: float              # measured dense matmul
    tf32_tflops: float
    # fitted step-time constants per kernel ("m2rnn_fwd", "m2rnn_bwd"): name -> µs (see perfmodel)
    constants: dict[str, dict[str, float]] = field(default_factory=dict)
    # how each number above was obtained, and the raw micro-benchmark rows
    method: dict[str, str] = field(default_factory=dict)
    raw: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    def save(self, folder: Path) -> Path:
        path = Path(folder) / self.slug / FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> "HardwareProfile":
        if data.get("schema") != SCHEMA:
            raise HardwareProfileError(f"{source}: schema {data.get('schema')!r}, this m2tune reads {SCHEMA}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise HardwareProfileError(f"{source}: unknown fields {unknown}")
        try:
            return cls(**data)
        except TypeError as exc:      # a required field is missing
            raise HardwareProfileError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: Path) -> "HardwareProfile":
        from ..profile_file import ProfileFileError, parse
        path = Path(path)
        try:
            data = parse(path.read_text(), str(path))
        except (OSError, UnicodeDecodeError, ProfileFileError) as exc:
            raise HardwareProfileError(f"{path}: cannot read a hardware profile: {exc}") from None
        if not isinstance(data, dict):
            raise HardwareProfileError(f"{path}: a hardware profile is a JSON object")
        return cls.from_dict(data, str(path))


def find(target: str, folders: list[Path]) -> HardwareProfile:
    """The profile of GPU slug `target` from the first folder that has one."""
    for folder in folders:
        path = Path(folder) / target / FILE
        if path.is_file():
            return HardwareProfile.load(path)
    have = sorted({p.parent.name for f in folders for p in Path(f).glob(f"*/{FILE}")})
    raise HardwareProfileError(f"no {FILE} for {target!r} in {[str(f) for f in folders]}; "
                               f"profiles exist for {have or 'no GPU'} (run `m2tune calibrate` on it)")


def resolve_target(target: str | None, folders: list[Path]) -> HardwareProfile:
    """The profile for GPU slug `target`, or for the GPU this process sees when None."""
    if target is None:
        from ..gpu import gpu_info
        info = gpu_info()
        if info is None:
            raise HardwareProfileError("no GPU here: name the GPU to model with --gpu "
                                       "(e.g. nvidia-h200)")
        target = info.slug
    return find(target, folders)
