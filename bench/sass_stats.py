"""What a kernel config compiles to on sm_90, without a GPU: registers, spills, shared memory, and
the instructions of each loop (per step of a step loop), by kind.

    PYTHONPATH=. python bench/sass_stats.py m2rnn_bwd_lean paper-7b BLOCK_K=16,BULK=4,MATMUL=dot_bf16 [...]

Each further argument is another config of the same kernel; one block of lines per config. A
sequential kernel's time is about S x (one step's instructions / issue rate), so the per-step
instruction counts, and which kinds they are (SHFL for reductions, STS/LDS/BAR for layout
conversions, LDL/STL for spills, HMMA for tensor-core products, MUFU for tanh), say where its time
goes before any GPU run. The launch is recorded from the kernel's own launcher (kernel_identity.py).
"""
from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kernel_identity as ki  # noqa: E402
import torch  # noqa: E402

VERBOSE = bool(int(__import__("os").environ.get("SASS_VERBOSE", "0")))
KINDS = ("HMMA", "MUFU", "SHFL", "BAR", "STS", "LDS", "LDG", "STG", "RED", "ATOM", "LDL", "STL")


def record(kernel: str, problem, config):
    from m2tune import variants
    module = variants.load(kernel)
    names = [n for n in dir(module) if n.endswith("_kernel")]
    name, = names
    rec = ki.Recorder(getattr(module, name))
    setattr(module, name, rec)
    try:
        x = ki.inputs(problem)
        y = torch.empty(problem.B, problem.S, problem.N, problem.V, dtype=x.q.dtype)
        h_T = torch.empty(problem.B, problem.N, problem.K, problem.V)
        if variants.spec(kernel).role == "forward":
            module.launch(problem, config, x, y, h_T, ckpt_every=64)
        else:
            ck = config["CKPT"]
            ckpt = torch.empty(problem.B, problem.N, -(-problem.S // ck), problem.K, problem.V)
            module.launch_backward(problem, config, x, ckpt, torch.randn_like(y), torch.randn_like(h_T),
                                   gradient_clipping=1.0)
    finally:
        setattr(module, name, rec.jit)
    (grid, args, kw), = rec.calls
    return rec.jit, grid, args, kw


def loops(sass: str) -> list[tuple[int, int, collections.Counter]]:
    """(start, end, opcode counts) of every backward branch's body, innermost first."""
    ins = []
    for line in sass.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m:
            body = re.sub(r"^@!?U?P\w+\s+", "", m.group(2).strip())
            ins.append((int(m.group(1), 16), body.split()[0] if body else "", body))
    found = []
    for addr, op, body in ins:
        target = re.search(r"0x([0-9a-f]+)", body) if op.startswith("BRA") else None
        if target and int(target.group(1), 16) < addr:
            start = int(target.group(1), 16)
            found.append((start, addr, collections.Counter(o.split(".")[0] for a, o, _ in ins if start <= a <= addr)))
    return sorted(found, key=lambda f: f[1] - f[0])


def main() -> None:
    from m2tune import variants
    from m2tune.problem import shape
    kernel, shape_name, *configs = sys.argv[1:]
    spec = variants.spec(kernel)
    problem = ki.short(shape(shape_name))
    for text in configs or [""]:
        params = {}
        for item in filter(None, text.split(",")):
            key, _, value = item.partition("=")
            params[key] = int(value) if value.lstrip("-").isdigit() else value
        config = spec.fit(spec.config(params), shape(shape_name))
        why = spec.check(shape(shape_name), config)
        print(f"{kernel} {config.short()}" + (f"  REJECTED: {why}" if why else ""))
        if why:
            continue
        jit, grid, args, kw = record(kernel, problem, config)
        _, sass, usage = ki.compile_sm90(jit, args, kw)
        print("  " + " ".join(re.findall(r"(REG:\d+|STACK:\d+|SHARED:\d+|LOCAL:\d+)", usage)))
        for start, end, counts in loops(sass):
            total = sum(counts.values())
            kinds = " ".join(f"{k}={counts[k]}" for k in KINDS if counts[k])
            print(f"  loop {start:#07x}-{end:#07x}: {total:5d} instructions  {kinds}")
            if VERBOSE:
                print("    " + " ".join(f"{k}={v}" for k, v in counts.most_common()))


if __name__ == "__main__":
    main()
