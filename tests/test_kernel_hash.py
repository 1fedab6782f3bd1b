"""The kernel code hash (what makes a tuned config stale), on an editable copy of the m2rnn family.

The copy lives in a package of its own (`probe<n>.fam`), imports rewritten to it, so each test
edits files freely and hashes with the family prefix of the copy.
"""
from __future__ import annotations

import itertools
import shutil
import sys
from pathlib import Path

import pytest

from m2tune import kernel_hash, variants

ROOT = Path(__file__).resolve().parent.parent
_count = itertools.count()


@pytest.fixture
def family(tmp_path, monkeypatch):
    name = f"hashprobe{next(_count)}"
    pkg = tmp_path / name / "fam"
    shutil.copytree(ROOT / "kernel_variants" / "m2rnn", pkg)
    (tmp_path / name / "__init__.py").write_text("")
    for path in pkg.glob("*.py"):
        path.write_text(path.read_text().replace("m2tune.kernel_variants.m2rnn", f"{name}.fam"))
    monkeypatch.syspath_prepend(str(tmp_path))

    def digest(kernel: str) -> str:
        return kernel_hash.source_hash(f"{name}.fam.{kernel}", family=f"{name}.")
    yield pkg, digest
    for mod in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[mod]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_the_copy_hashes_like_the_bundled_kernels_modulo_the_module_names(family):
    _, digest = family
    # same statements, other module names in the imports: other hashes, but stable ones
    assert digest("fwd") == digest("fwd") and digest("fwd") != digest("bwd")
    assert variants.source_hash("m2rnn_fwd") != variants.source_hash("m2rnn_bwd")


def test_comments_docstrings_and_another_kernels_additions_change_nothing(family):
    pkg, digest = family
    before = digest("fwd"), digest("bwd")
    edit(pkg / "fwd.py", "    BM: tl.constexpr = BLOCK_B * BLOCK_K\n",
         "    # a new comment\n    BM: tl.constexpr = BLOCK_B * BLOCK_K\n")
    edit(pkg / "common.py", '"""Rows of the state this program owns', '"""The rows of the state this program owns')
    with open(pkg / "common.py", "a") as fh:      # a new piece nobody uses yet
        fh.write("\n\n@triton.jit\ndef brand_new(x):\n    return x + 1\n")
    with open(pkg / "spec.py", "a") as fh:        # a new kernel's spec entry
        fh.write("\n\nclass LaterSpec(BackwardSpec):\n    name = 'later'\n\n\nLATER = LaterSpec()\n")
    assert (digest("fwd"), digest("bwd")) == before


def test_a_used_piece_changes_the_kernels_that_use_it_only(family):
    pkg, digest = family
    fwd, bwd = digest("fwd"), digest("bwd")
    edit(pkg / "bwd.py", "tl.debug_barrier()  # scratch written above",
         "tl.debug_barrier()\n        tl.debug_barrier()  # scratch written above")
    assert digest("fwd") == fwd and digest("bwd") != bwd
    bwd = digest("bwd")
    edit(pkg / "common.py", "e = tl.exp(-2.0 * tl.abs(x))", "e = tl.exp(-2.0 * tl.abs(x) + 0.0)")
    assert digest("fwd") != fwd and digest("bwd") != bwd        # both call tanh()


def test_the_launch_geometry_in_the_spec_counts(family):
    pkg, digest = family
    fwd, bwd = digest("fwd"), digest("bwd")
    edit(pkg / "spec_base.py", "return max(bv, 16) if matmul != \"fma\" else bv",
         "return max(bv, 32) if matmul != \"fma\" else bv")
    assert digest("fwd") != fwd and digest("bwd") != bwd        # padded_v sets BV for both
    fwd, bwd = digest("fwd"), digest("bwd")
    edit(pkg / "spec.py", "copies = min(config[\"SLOTS\"], g)", "copies = max(1, min(config[\"SLOTS\"], g))")
    assert digest("fwd") == fwd and digest("bwd") != bwd        # the backward's gradient plan


def test_the_hash_is_the_same_on_other_python_versions():
    """Profiles are tuned on one machine and read on another: the hash must not depend on the
    Python version (a syntax tree's dump does: 3.12 added fields). Checked against every other
    CPython found under pyenv (the development machines carry 3.10-3.13)."""
    import subprocess
    others = sorted(p for p in Path("/root/.pyenv/versions").glob("3.1[0-9]*/bin/python")
                    if p.resolve() != Path(sys.executable).resolve()) if Path("/root/.pyenv/versions").is_dir() else []
    if not others:
        pytest.skip("no other Python version on this machine")
    # the bundled kernels only: a test that ran earlier in this process may have registered extras
    # (tests/test_plan_faults.py's mutants), which the other Python does not know
    code = ("from m2tune import variants; "
            "print(*(variants.source_hash(k) for k in variants.names() if variants.REGISTRY[k].op))")
    mine = " ".join(variants.source_hash(k) for k in variants.names() if variants.REGISTRY[k].op)
    for python in others:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                             env={"PYTHONPATH": str(ROOT), "PATH": ""}, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == mine.split(), python
