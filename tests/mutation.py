"""Load a kernel module with one planted fault, by editing a copy of its source.

The production kernels carry no fault switches; each fault is a textual edit that must apply
exactly once, so a refactor that moves the code makes the fault test fail loudly instead of
silently testing nothing. The anchor may sit in the kernel module itself or in a module of its
family it imports (common.py): then that module is edited, and the kernel module's copy imports
the edited one instead.
"""
import importlib.util
import inspect
import itertools
import sys
from pathlib import Path
from types import ModuleType

_counter = itertools.count()
FAMILY = "m2tune.kernel_variants."


def _family_imports(source: str) -> list[str]:
    names = []
    for line in source.splitlines():
        words = line.split()
        if line.startswith("from ") and len(words) > 1 and words[1].startswith(FAMILY):
            names.append(words[1])
    return names


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module          # Triton reads a jit function's globals through its module
    spec.loader.exec_module(module)
    return module


def mutate(module: ModuleType, old: str, new: str, workdir: Path) -> ModuleType:
    source = inspect.getsource(module)
    deps = {name: inspect.getsource(importlib.import_module(name)) for name in _family_imports(source)}
    places = {name: text.count(old) for name, text in {module.__name__: source, **deps}.items()}
    found = sum(places.values())
    assert found == 1, f"fault anchor found {found} times in {places}: {old!r}"
    where = next(name for name, count in places.items() if count)
    tag = next(_counter)
    if where != module.__name__:
        dep_name = f"mutant_{where.rsplit('.', 1)[-1]}_{tag}"
        dep_path = workdir / f"{dep_name}.py"
        dep_path.write_text(deps[where].replace(old, new))
        _load(dep_path, dep_name)
        source = source.replace(f"from {where} import", f"from {dep_name} import")
    else:
        source = source.replace(old, new)
    name = f"{module.__name__.rsplit('.', 1)[-1]}_fault{tag}"
    path = workdir / f"{name}.py"
    path.write_text(source)
    return _load(path, name)


def mutant_variant(kernel: str, old: str, new: str, workdir: Path) -> tuple[str, str, str]:
    """The kernel `kernel` with one planted fault as a variant of its own, for the tuner's path:
    (name, spec "module:ATTR", kernel module), to register through TrialRequest.extra_variants.

    Its kernel module and a spec module (the kernel's spec class under the new name, priced by the
    model as the original) are written into `workdir`, which must be on sys.path of the process
    that runs the trial (a worker child inherits the parent's sys.path).
    """
    from m2tune import variants
    module = mutate(variants.load(kernel), old, new, workdir)
    spec_cls = type(variants.spec(kernel))
    name = f"{kernel}__{module.__name__}"
    spec_module = f"{module.__name__}_spec"
    (workdir / f"{spec_module}.py").write_text(
        f"from m2tune.problem import KernelConfig\n"
        f"from {spec_cls.__module__} import {spec_cls.__name__}\n\n\n"
        f"class Mutant({spec_cls.__name__}):\n"
        f"    name = {name!r}\n\n"
        f"    def model_config(self, config):\n"
        f"        return KernelConfig.of({kernel!r}, config.as_dict())\n\n\n"
        f"SPEC = Mutant()\n")
    return name, f"{spec_module}:SPEC", module.__name__
