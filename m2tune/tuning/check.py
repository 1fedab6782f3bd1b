"""`m2tune check`: every tuned-config and hardware file of a profiles folder, judged as the runtime would."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from .. import variants
from ..model.hardware import FILE as HARDWARE_FILE, HardwareProfile, HardwareProfileError
from ..profile_file import ProfileFileError, load
from ..runtime import triton_notice


def check_file(path: Path) -> tuple[str, str]:
    """(one line saying what the file is or what is wrong, "ok" | "warn" | "fail").

    "warn": usable, with a caveat the runtime also states once (tuned with another Triton version:
    the kernel source is the same, the compiler is not); `m2tune check --strict` fails on it.
    """
    import triton

    from ..gpu import canonical_gpu
    if path.name == HARDWARE_FILE:
        try:
            hw = HardwareProfile.load(path)
        except HardwareProfileError as exc:
            return str(exc), "fail"
        return f"{path}: hardware profile of {hw.name}, model constants for {sorted(hw.constants)}", "ok"
    try:
        pf = load(path)
    except ProfileFileError as exc:
        return str(exc), "fail"
    problems = []
    if pf.kernel not in variants.REGISTRY:
        problems.append(f"unknown kernel {pf.kernel!r}")
    elif pf.variant_hash != variants.source_hash(pf.kernel):
        problems.append(f"stale: template source changed (hash {pf.variant_hash} != "
                        f"{variants.source_hash(pf.kernel)})")
    folder_gpu = canonical_gpu(path.parent.name)
    if canonical_gpu(str(pf.gpu.get("slug") or pf.gpu.get("name"))) != folder_gpu:
        problems.append(f"in folder {path.parent.name} but tuned for {pf.gpu.get('name')!r}")
    if problems:
        return f"{path}: " + "; ".join(problems), "fail"
    measured = sum(e.measured for e in pf.entries)
    line = (f"{path}: {pf.kernel} for {pf.gpu.get('name')}, {len(pf.entries)} buckets "
            f"({measured} measured, {len(pf.entries) - measured} predicted)")
    if pf.versions.get("triton") != triton.__version__:
        return line + f"; {triton_notice(pf.versions.get('triton'), triton.__version__)}", "warn"
    return line, "ok"


def check_folder(folder: Path) -> Iterator[tuple[str, str]]:
    for path in sorted(Path(folder).glob("*/*.json")):
        yield check_file(path)
