"""Outcome of one candidate (trial record `status`) and how exceptions map to it."""
from __future__ import annotations

OK = "ok"
INVALID_CONFIG = "invalid-config"        # rejected by the variant's check() before compiling
COMPILE_ERROR = "compile-error"
OUT_OF_RESOURCES = "out-of-resources"     # shared memory / registers beyond the GPU's limits
LAUNCH_ERROR = "launch-error"
WRONG_RESULT = "wrong-result"
TIMEOUT = "timeout"
CRASHED = "crashed"

ALL = (OK, INVALID_CONFIG, COMPILE_ERROR, OUT_OF_RESOURCES, LAUNCH_ERROR, WRONG_RESULT, TIMEOUT, CRASHED)


def classify(exc: BaseException) -> str:
    """Name the failure category of an exception raised while compiling or launching."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "OutOfResources" in names:
        return OUT_OF_RESOURCES
    if names & {"CompilationError", "CompileTimeAssertionFailure", "PTXASError", "MLIRError"}:
        return COMPILE_ERROR
    text = str(exc)
    if "out of resource" in text.lower():
        return OUT_OF_RESOURCES
    if "PassManager::run failed" in text:     # Triton's MLIR lowering gave up: a compile error
        return COMPILE_ERROR
    return LAUNCH_ERROR
