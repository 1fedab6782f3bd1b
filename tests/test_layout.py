"""The package's structure, drawn from the source: no import cycle, every import points down the
data flow, the kernel specs need neither Triton nor torch, and the wheel holds one top-level name."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Groups, lowest first: a module may import its own group and the groups below it, never above.
# Data flows up this list: kernels and their specs -> the runtime the op uses -> proving and timing
# a config -> the model -> tuning (which exports profiles for the runtime) -> dashboards -> command.
GROUPS = [
    ("core", ("m2tune", "m2tune.problem", "m2tune.inputs", "m2tune.status", "m2tune.resources",
              "m2tune.gpu", "m2tune.kernel_hash", "m2tune.interpreter_calls", "m2tune.reuse")),
    ("kernels", ("m2tune.kernel_variants",)),
    ("runtime", ("m2tune.variants", "m2tune.coverage", "m2tune.profile_file", "m2tune.runtime", "m2tune.compile_ahead",
                 "m2tune.ops", "m2tune.layer")),
    ("measure", ("m2tune.measure",)),
    ("model", ("m2tune.model",)),
    ("tuning", ("m2tune.tuning",)),
    ("report", ("m2tune.report",)),
    ("cli", ("m2tune.cli", "m2tune.__main__")),
]
MAX_LINES = 420


def _modules() -> dict[str, Path]:
    """Module name -> file, for m2tune/ and kernel_variants/ (installed as m2tune.kernel_variants)."""
    out = {}
    for base, prefix in ((ROOT / "m2tune", "m2tune"), (ROOT / "kernel_variants", "m2tune.kernel_variants")):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([prefix, *parts])] = path
    return out


def _group(module: str) -> int:
    for rank, (_, members) in enumerate(GROUPS):
        if any(module == m or (m != "m2tune" and module.startswith(m + ".")) for m in members):
            return rank
    raise AssertionError(f"{module} belongs to no group of tests/test_layout.py: place it")


def _imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules `module` imports anywhere in its file (function-level imports count)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                root = ".".join(base + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            names = [root] + [f"{root}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def test_every_import_points_down_and_nothing_is_circular():
    known = _modules()
    graph = {m: _imports(m, p, known) for m, p in known.items()}
    upward = [f"{m} ({GROUPS[_group(m)][0]}) imports {d} ({GROUPS[_group(d)][0]})"
              for m, deps in graph.items() for d in deps if _group(d) > _group(m)]
    assert not upward, "imports against the data flow:\n" + "\n".join(sorted(upward))
    # a cycle among modules (the package __init__ is everyone's parent, not a dependency)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m] - {"m2tune"}):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_file_is_a_giant():
    long = {str(p.relative_to(ROOT)): n for p in _modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


BLOCKER = """
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "triton", "numpy", "optuna"):
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, Blocked())
"""


def test_specs_and_the_registry_need_neither_triton_nor_torch():
    code = BLOCKER + """
import pkgutil, importlib
import m2tune.kernel_variants as kv
from m2tune import variants
from m2tune.problem import shape
families = [m.name for m in pkgutil.iter_modules(kv.__path__) if m.ispkg]
for family in families:
    importlib.import_module(f"m2tune.kernel_variants.{family}.spec")
for name in variants.names():
    spec = variants.spec(name)
    assert spec.check(shape("paper-7b"), spec.DEFAULT) is None, name
    variants.source_hash(name)
print(len(families), len(variants.names()))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    families, kernels = map(int, out.stdout.split())
    assert families >= 1 and kernels >= 2


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list the tracked files")
def test_the_wheel_holds_one_top_level_name(tmp_path):
    src = tmp_path / "src"
    # the tracked tree only (a fresh clone): no build leftovers, no virtual environment
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    wheel, = (tmp_path / "dist").glob("m2tune-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"m2tune"}, top
    for inside in ("m2tune/kernel_variants/m2rnn/spec.py", "m2tune/kernel_variants/m2rnn/fwd.py",
                   "m2tune/search_spaces/m2rnn_fwd.yaml", "m2tune/profiles/nvidia-h200/m2rnn_fwd.json"):
        assert inside in names, inside
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "m2tune = m2tune.cli:main" in entry


def test_the_command_works_with_a_foreign_cli_package_first_on_the_path(tmp_path):
    foreign = tmp_path / "cli"
    foreign.mkdir()
    (foreign / "__init__.py").write_text("raise ImportError('the wrong cli package')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    command = Path(sys.executable).parent / "m2tune"
    runs = [[sys.executable, "-m", "m2tune", "--help"]]
    if command.is_file():
        runs.append([str(command), "--help"])
    for run in runs:
        out = subprocess.run(run, capture_output=True, text=True, env=env, cwd=tmp_path)
        assert out.returncode == 0 and "Tune, validate and ship" in out.stdout, (run, out.stderr)
    # the checkout's cli.py calls the same command
    out = subprocess.run([sys.executable, str(ROOT / "cli.py"), "--help"], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert out.returncode == 0 and "Tune, validate and ship" in out.stdout, out.stderr
