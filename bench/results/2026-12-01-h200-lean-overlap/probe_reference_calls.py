# Device call 5 of this folder, run as bench/probe/probe.py: do compiled dense calls run the kernels?
import torch
from m2tune import ops
from m2tune.inputs import make_inputs
from m2tune.problem import Problem
orig = ops.m2rnn_reference
hits = []
def spy(*a, **k):
    hits.append(1)
    return orig(*a, **k)
ops.m2rnn_reference = spy
print("dynamic plan:", ops._dynamic_plan("cuda", "bfloat16", None, 0.5, True)[0])
p = Problem(B=3, S=77, K=16, V=16, Nq=1, Nk=1, Nv=4, Nw=4, Nf=4, h0=True, dtype="bfloat16")
x = make_inputs(p, seed=0, device="cuda")
ins = [t.to(torch.bfloat16 if t is not x.h0 else torch.float32).requires_grad_(True) for t in (x.q, x.k, x.v, x.W, x.f, x.h0)]
def loss(q, k, v, W, f, h0):
    y, h = ops.m2rnn(q, k, v, W, f, h0, gradient_clipping=0.5)
    return (y.float() ** 2).sum() + h.sum()
for mode in ("default", "reduce-overhead"):
    torch._dynamo.reset(); hits.clear()
    c = torch.compile(loss, mode=mode)
    for _ in range(3):
        c(*ins).backward()
    print(mode, "reference calls:", len(hits), flush=True)
