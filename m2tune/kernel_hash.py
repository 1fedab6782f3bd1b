"""The identity of a kernel's code: what makes a config tuned for it stale.

A tuned config is stale when the code that runs for it changed. That code is the kernel module
(its @triton.jit functions and its launcher) and what it uses from the modules of its family it
imports: the @triton.jit pieces of common.py it calls, the spec entry whose geometry the launcher
reads. So the hash covers the kernel module whole and, of each family module it imports from,
only the top-level definitions it reaches by name (transitively). Adding another kernel's helpers
or spec entry to those files leaves every other kernel's tuned configs valid; changing a piece a
kernel uses makes its configs stale. Comments, docstrings and blank lines do not count: what is
hashed is each reached statement's source text without them, so the hash is the same on every
Python version (a syntax tree's dump is not: 3.12 added fields). bench/kernel_identity.py is the
stronger check a restructure can run: the SASS and launch arguments of every shipped config.

Nothing is imported to hash it: modules are found and parsed, never executed.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import io
import tokenize
from typing import Iterable, Optional

FAMILY = "m2tune.kernel_variants."


def source_hash(kernel_module: str, family: str = FAMILY) -> str:
    """sha256 (16 hex digits) of `kernel_module` and the definitions it reaches in the modules
    whose names start with `family`."""
    digest = hashlib.sha256()
    sources: dict[str, tuple[list[str], dict[int, int]]] = {}      # read once per hash, never reused
    for module, statements in sorted(_reached(kernel_module, family).items()):
        digest.update(module.rsplit(".", 1)[-1].encode())
        if module not in sources:
            sources[module] = _lines_and_comments(module)
        for stmt in statements:
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                continue                                   # a module docstring
            digest.update(_text(sources[module], stmt).encode())
    return digest.hexdigest()[:16]


def _text(source: tuple[list[str], dict[int, int]], stmt: ast.stmt) -> str:
    """The statement's source lines without its docstrings, comments, blank lines, trailing spaces."""
    lines, comments = source
    drop = set()
    for node in ast.walk(stmt):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body \
                and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) \
                and isinstance(node.body[0].value.value, str):
            drop.update(range(node.body[0].lineno, node.body[0].end_lineno + 1))
    out = []
    for number in range(stmt.lineno, stmt.end_lineno + 1):
        if number in drop:
            continue
        line = lines[number - 1]
        if number in comments:
            line = line[:comments[number]]
        line = line.rstrip()
        if line.strip():
            out.append(line)
    return "\n".join(out) + "\n"


def _lines_and_comments(module: str) -> tuple[list[str], dict[int, int]]:
    """The module's source lines, and for each line with a comment the column it starts at."""
    source = _source(module)
    comments = {tok.start[0]: tok.start[1] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    return source.splitlines(), comments


def _reached(kernel_module: str, family: str) -> dict[str, list[ast.stmt]]:
    """module -> the statements of it that count: all of the kernel module's own, and of each
    family module the definitions reached from the kernel module's imports."""
    body = _parse(kernel_module).body
    wanted: dict[str, set[str]] = {}
    todo = list(_family_names(body, family))
    while todo:
        module, name = todo.pop()
        if name in wanted.setdefault(module, set()):
            continue
        wanted[module].add(name)
        todo += _family_names(_slice(_parse(module).body, {name}, family), family)
    reached = {module: _slice(_parse(module).body, names, family) for module, names in wanted.items()}
    reached[kernel_module] = body
    return reached


def _family_names(statements: list[ast.stmt], family: str) -> Iterable[tuple[str, str]]:
    """(module, name) for every `from <family module> import name` in `statements`; a name that
    is itself a module (`from pkg import mod`) stands for all of that module."""
    for stmt in statements:
        for node in ast.walk(stmt):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(family)):
                continue
            package = _is_package(node.module)
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                if package and _is_module(sub):
                    yield from ((sub, n) for n in _top_level_names(_parse(sub), family))
                else:
                    yield node.module, alias.name


def _slice(body: list[ast.stmt], names: set[str], family: str) -> list[ast.stmt]:
    """The top-level statements that define `names` and everything they use, in file order."""
    defines: dict[str, ast.stmt] = {}
    for stmt in body:
        for name in _defined(stmt, family):
            defines[name] = stmt
    chosen: list[ast.stmt] = []
    todo = list(names)
    while todo:
        stmt = defines.get(todo.pop())
        if stmt is None or any(stmt is c for c in chosen):
            continue
        chosen.append(stmt)
        todo += [n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)]
    position = {id(s): i for i, s in enumerate(body)}
    return sorted(chosen, key=lambda s: position[id(s)])


def _defined(stmt: ast.stmt, family: str) -> list[str]:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, ast.Assign):
        return [n.id for t in stmt.targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        return [stmt.target.id]
    if isinstance(stmt, ast.ImportFrom) and stmt.module and stmt.module.startswith(family):
        return [a.asname or a.name for a in stmt.names]     # followed into that module too
    return []


def _top_level_names(tree: ast.Module, family: str) -> list[str]:
    """Every name a module defines at its top level (a whole module imported as one name)."""
    return [n for stmt in tree.body for n in _defined(stmt, family)]


def _is_package(name: str) -> bool:
    # finding a module imports its parent packages, never the module itself
    found = importlib.util.find_spec(name)
    return found is not None and found.submodule_search_locations is not None


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ModuleNotFoundError, ValueError):
        return False


def _source(module: str) -> str:
    found: Optional[importlib.machinery.ModuleSpec] = importlib.util.find_spec(module)
    if found is None or not found.origin:
        raise ModuleNotFoundError(f"cannot find the source of {module!r}")
    with open(found.origin, encoding="utf-8") as fh:
        return fh.read()


def _parse(module: str) -> ast.Module:
    return ast.parse(_source(module))
