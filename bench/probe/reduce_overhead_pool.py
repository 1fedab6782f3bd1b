"""Which tensors does inductor's CUDA-graph warm-up find outside its memory pool? (issue 14)

torch.compile(mode="reduce-overhead") over the op, dense, as tests/test_ops.py's reduce-overhead case:
every launcher's returned tensors (and every tensor allocated by the op) are printed with their
storage pointer, thread and stream, then the RuntimeError's pointer set, so the culprits are named.
Run on the GPU from the repo root:  PYTHONPATH=. python3 bench/probe/reduce_overhead_pool.py
"""
import re
import threading

import torch

from m2tune import ops, variants
from m2tune.inputs import TORCH_DTYPES, cast, make_inputs
from m2tune.problem import Problem

seen = {}


def caller():
    """The torch frames that called the op (inductor's CUDA-graph node, AOTAutograd, ...)."""
    import traceback
    frames = [f"{f.filename.split('site-packages/')[-1]}:{f.lineno}:{f.name}" for f in traceback.extract_stack()
              if "torch/" in f.filename]
    return " <- ".join(reversed(frames[-8:]))


def note(tag, tensors):
    if tag in ("fwd", "m2rnn_bwd", "m2rnn_bwd_lean"):
        print(f"{tag}: stream={torch.cuda.current_stream().cuda_stream} capturing="
              f"{torch.cuda.is_current_stream_capturing()} from {caller()}", flush=True)
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.numel():
            ptr = t.untyped_storage().data_ptr()
            seen.setdefault(ptr, []).append(f"{tag}.{name} {tuple(t.shape)} {t.dtype} "
                                            f"thread={threading.current_thread().name} "
                                            f"stream={torch.cuda.current_stream().cuda_stream}")


def wrap(module, name, tag, outputs):
    orig = getattr(module, name)

    def spy(*a, **k):
        out = orig(*a, **k)
        note(tag, outputs(a, k, out))
        return out
    setattr(module, name, spy)


fwd = variants.load("m2rnn_fwd")
wrap(fwd, "launch", "fwd", lambda a, k, out: {"y": a[3], "h_T": a[4], "ckpt": out})
for kernel in ("m2rnn_bwd", "m2rnn_bwd_lean"):
    wrap(variants.load(kernel), "launch_backward", kernel, lambda a, k, out: dict(out))
orig_fwd_op = ops._fwd


p = Problem(B=3, S=77, K=16, V=16, Nq=1, Nk=1, Nv=4, Nw=4, Nf=4, h0=True, dtype="bfloat16")


def loss(q, k, v, W, f, h0):
    y, h = ops.m2rnn(q, k, v, W, f, h0, gradient_clipping=0.5)
    return (y.float() ** 2).sum() + h.sum()


compiled = torch.compile(loss, mode="reduce-overhead", fullgraph=True)
leaves = None
for seed in range(3):
    x = cast(make_inputs(p, seed=seed, device="cuda"), TORCH_DTYPES[p.dtype])
    fresh = [x.q, x.k, x.v, x.W, x.f, x.h0]
    if leaves is None:
        leaves = [t.detach().clone().requires_grad_(True) for t in fresh]
        note("leaf", dict(zip("q k v W f h0".split(), leaves)))
    with torch.no_grad():
        for leaf, t in zip(leaves, fresh):
            leaf.copy_(t)
    try:
        out = compiled(*leaves)
        note("loss", {"out": out})
        gs = torch.autograd.grad(out, leaves)
        note("grad", dict(zip("q k v W f h0".split(), gs)))
        print(f"call {seed}: ok", flush=True)
    except RuntimeError as exc:
        msg = str(exc)
        print(f"call {seed}: {msg[:300]}", flush=True)
        for ptr in map(int, re.findall(r"\d{9,}", msg)):
            print("  culprit", ptr, seen.get(ptr, ["(not a launcher's tensor)"]))
        break
print("main thread:", threading.current_thread().name)
for ptr, where in seen.items():
    print(ptr, where[:3])
