"""Fingerprint what the GPU would run for every shipped config, without a GPU.

For each entry (and training entry) of profiles/<gpu>/<kernel>.json the kernel's own launcher is
called on CPU tensors with its Triton kernel replaced by a recorder: that captures the launch
exactly (grid, every argument's dtype/shape/aliasing or value, every constexpr and launch option).
The recorded launch is then compiled for sm_90 on the CPU (Triton's own ptxas) and its SASS hashed.
Two source trees whose fingerprints agree launch the same machine code with the same arguments:
a restructure that moves kernel code proves it changed nothing the GPU runs.

    PYTHONPATH=<tree> python bench/kernel_identity.py --layout new|old --out prints.json
    python bench/kernel_identity.py --compare a.json b.json
    PYTHONPATH=. python bench/kernel_identity.py --layout new --restamp BASELINE.json

--restamp re-stamps the shipped profiles' kernel-code hash (m2tune/kernel_hash.py) only when every
shipped launch of this tree matches the baseline's fingerprint (the tree the configs were tuned on):
an edit of the kernels' files that changes nothing they run needs no re-tuning.

Launches are recorded at a short S (16 + S % 16, as precompile does: the same Triton
specialisation); integer arguments equal to 1 are compiled as constants, as Triton specialises them.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Optional

os.environ.pop("TRITON_INTERPRET", None)          # compile for the GPU, not the interpreter

import torch  # noqa: E402

LAYOUTS = {   # kernel -> (module path, kernel function name, launcher name)
    "new": {"m2rnn_fwd": ("m2tune.kernel_variants.m2rnn.fwd", "m2rnn_fwd_kernel", "launch"),
            "m2rnn_bwd": ("m2tune.kernel_variants.m2rnn.bwd", "m2rnn_bwd_kernel", "launch_backward"),
            "m2rnn_bwd_lean": ("m2tune.kernel_variants.m2rnn.bwd_lean", "m2rnn_bwd_lean_kernel",
                               "launch_backward")},
    "old": {"m2rnn_fwd": ("kernel_variants.m2rnn_fwd", "m2rnn_fwd_kernel", "launch"),
            "m2rnn_bwd": ("kernel_variants.m2rnn_bwd", "m2rnn_bwd_kernel", "launch_backward")},
}
TRITON_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
                torch.int32: "i32", torch.int64: "i64", torch.float64: "fp64"}


class Recorder:
    """Stands in for a @triton.jit kernel: `kernel[grid](*args, **kw)` records instead of launching."""

    def __init__(self, jit):
        self.jit, self.calls = jit, []

    def __getitem__(self, grid):
        def record(*args, **kw):
            self.calls.append((tuple(grid), args, kw))
        return record


def describe(grid, args, kw) -> dict:
    ptrs, out = [], []
    for a in args:
        if isinstance(a, torch.Tensor):
            ptr = a.data_ptr()
            alias = ptrs.index(ptr) if ptr in ptrs else len(ptrs)
            ptrs.append(ptr)
            out.append(["tensor", str(a.dtype), list(a.shape), list(a.stride()), alias])
        else:
            out.append(["value", repr(a)])
    return {"grid": list(grid), "args": out, "kwargs": {k: repr(v) for k, v in sorted(kw.items())}}


def compile_sm90(jit, args, kw):
    """The recorded launch compiled for sm_90 on the CPU: (Triton's CompiledKernel, SASS text)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    options = {k: kw[k] for k in ("num_warps", "num_stages", "maxnreg") if kw.get(k) is not None}
    const = {k: v for k, v in kw.items() if k not in options}
    names = jit.arg_names
    signature, constexprs, attrs = {}, {}, {}
    # what the JIT tells the compiler on a real launch: pointers 16-byte aligned and ints that are
    # multiples of 16 carry tt.divisibility=16 (without it loads and stores are not vectorised and
    # the SASS counted here is not the SASS the GPU runs)
    divisible = [["tt.divisibility", 16]]
    for i, name in enumerate(names):
        if name in const:
            signature[name], constexprs[(i,)] = "constexpr", const[name]
        elif i < len(args):
            a = args[i]
            if isinstance(a, torch.Tensor):
                signature[name] = "*" + TRITON_TYPES[a.dtype]
                if a.data_ptr() % 16 == 0:
                    attrs[(i,)] = divisible
            elif isinstance(a, bool):
                signature[name] = "i1"
            elif isinstance(a, int):
                if a == 1:                      # Triton specialises ints equal to 1
                    signature[name], constexprs[(i,)] = "constexpr", 1
                else:
                    signature[name] = "i64" if abs(a) >= 2 ** 31 else "i32"
                    if a % 16 == 0:
                        attrs[(i,)] = divisible
            else:
                signature[name] = "fp32"
        else:                                   # a constexpr left at its default
            signature[name] = "constexpr"
            constexprs[(i,)] = jit.params[i].default
    compiled = triton.compile(ASTSource(jit, signature, constexprs=constexprs, attrs=attrs),
                              target=GPUTarget("cuda", 90, 32), options=options)
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(compiled.asm["cubin"])
        fh.flush()
        sass = subprocess.run([str(tool), "--dump-sass", fh.name], capture_output=True, text=True,
                              check=True).stdout
        usage = subprocess.run([str(tool), "--dump-resource-usage", fh.name], capture_output=True,
                               text=True, check=True).stdout
    return compiled, sass, usage


def sass_hash(jit, args, kw) -> str:
    _, sass, _ = compile_sm90(jit, args, kw)
    body = [line for line in sass.splitlines() if line.strip().startswith("/*")]
    return hashlib.sha256("\n".join(body).encode()).hexdigest()[:16]


def short(problem):
    from m2tune.problem import Problem
    if problem.S <= 32:
        return problem
    return replace(problem, S=16 + problem.S % 16) if isinstance(problem, Problem) else problem


def inputs(problem):
    try:
        from m2tune.inputs import TORCH_DTYPES, cast, make_inputs
    except ImportError:                      # the layout before make_inputs moved to m2tune.inputs
        from m2tune.validate import TORCH_DTYPES, cast, make_inputs
    return cast(make_inputs(problem, seed=0), TORCH_DTYPES[problem.dtype])


def _spec_config(kernel: str, params: dict):
    from m2tune import variants
    return variants.spec(kernel).config(params)


def fingerprints(layout: str, profiles: Path) -> dict:
    from m2tune.problem import KernelConfig, Problem
    modules = {k: importlib.import_module(m) for k, (m, _, _) in LAYOUTS[layout].items()}
    recorders = {}
    for kernel, (_, fn, _) in LAYOUTS[layout].items():
        recorders[kernel] = Recorder(getattr(modules[kernel], fn))
        setattr(modules[kernel], fn, recorders[kernel])
    out = {}
    for kernel in LAYOUTS[layout]:
        if not (profiles / f"{kernel}.json").is_file():
            continue
        doc = json.loads((profiles / f"{kernel}.json").read_text())
        for entry in doc["entries"]:
            configs = [("tuned", entry["config"])]
            if entry.get("training"):
                configs.append(("training", entry["training"]["config"]))
            problem = short(Problem(**entry["bucket"]))
            for role, params in configs:
                # as the runtime reads an entry: its params over the spec's defaults (an entry written
                # before a parameter existed runs that parameter's default)
                config = (_spec_config(kernel, params) if layout == "new" else KernelConfig.of(kernel, params))
                x = inputs(problem)
                lead = (problem.B, problem.S)
                y = torch.empty(*lead, problem.N, problem.V, dtype=x.q.dtype)
                h_T = torch.empty(problem.B, problem.N, problem.K, problem.V)
                rec = recorders[kernel]
                rec.calls.clear()
                if LAYOUTS[layout][kernel][2] == "launch":
                    modules[kernel].launch(problem, config, x, y, h_T, ckpt_every=64)
                else:
                    ck = config["CKPT"]
                    ckpt = torch.empty(problem.B, problem.N, -(-problem.S // ck), problem.K, problem.V)
                    modules[kernel].launch_backward(problem, config, x, ckpt, torch.randn_like(y),
                                                    torch.randn_like(h_T), gradient_clipping=1.0)
                (grid, args, kw), = rec.calls
                key = f"{kernel}/{entry['name']}/{role}"
                out[key] = {**describe(grid, args, kw), "sass": sass_hash(rec.jit, args, kw)}
                print(key, out[key]["sass"], flush=True)
    return out


def same_launch(a: Optional[dict], b: Optional[dict]) -> bool:
    """One launch in both trees: the same grid, arguments and SASS, and the same constexprs except one
    a tree does not have at all (a parameter added since, passed at a value that compiles the same)."""
    if a is None or b is None:
        return a is b
    if (a["grid"], a["args"], a["sass"]) != (b["grid"], b["args"], b["sass"]):
        return False
    shared = a["kwargs"].keys() & b["kwargs"].keys()
    return all(a["kwargs"][k] == b["kwargs"][k] for k in shared)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layout", choices=sorted(LAYOUTS))
    ap.add_argument("--profiles", type=Path, default=Path("profiles/nvidia-h200"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compare", nargs=2, type=Path)
    ap.add_argument("--restamp", type=Path, help="baseline fingerprints; re-stamp the profiles if all match")
    a = ap.parse_args()
    if a.compare:
        one, two = (json.loads(p.read_text()) for p in a.compare)
        differ = sorted(k for k in one.keys() | two.keys() if not same_launch(one.get(k), two.get(k)))
        print(f"{len(one)} / {len(two)} launches; {len(differ)} differ")
        for k in differ:
            print("  differs:", k)
        sys.exit(1 if differ else 0)
    prints = fingerprints(a.layout, a.profiles)
    if a.out:
        a.out.write_text(json.dumps(prints, indent=1, sort_keys=True) + "\n")
    if a.restamp:
        base = json.loads(a.restamp.read_text())
        differ = sorted(k for k in base.keys() | prints.keys() if not same_launch(base.get(k), prints.get(k)))
        if differ:
            sys.exit(f"not re-stamped: {len(differ)} launches differ from {a.restamp}: {differ[:5]}")
        from m2tune import variants
        for kernel in LAYOUTS[a.layout]:
            path = a.profiles / f"{kernel}.json"
            if not path.is_file():
                continue
            doc = json.loads(path.read_text())
            doc["variant_hash"] = variants.source_hash(kernel)
            path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
            print(f"re-stamped {path}: {doc['variant_hash']}")


if __name__ == "__main__":
    main()
