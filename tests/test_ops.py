"""The autograd op m2rnn: gradients under the validation model, fallbacks, errors, torch.compile."""
import pytest
import torch

from m2tune.inputs import InputError
from m2tune.ops import m2rnn
from m2tune.problem import Problem
from m2tune.measure.validate import validate_training

SMALL = {"forward": {"BLOCK_K": 8}, "backward": {"BLOCK_K": 8, "CKPT": 16}}


def op_step(config):
    def train(x, clip, dy, dh_T):
        leaves = {n: getattr(x, n).detach().clone().requires_grad_(True)
                  for n in ("q", "k", "v", "W", "f", "h0") if getattr(x, n) is not None}
        y, h = m2rnn(*(leaves.get(n) for n in ("q", "k", "v", "W", "f")), leaves.get("h0"),
                     cu_seqlens=x.cu_seqlens, gradient_clipping=clip, config=config)
        grads = torch.autograd.grad((y, h), list(leaves.values()), (dy, dh_T))
        return y.detach(), h.detach(), dict(zip(leaves, grads))
    return train


CASES = [
    ("shared-h0", Problem(B=2, S=20, K=12, V=6, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2, h0=True), None),
    ("shared-clip", Problem(B=2, S=20, K=12, V=6, Nq=2, Nk=1, Nv=4, Nw=1, Nf=2, h0=True), 0.05),
    ("varlen-clip", Problem.varlen([7, 19, 3], K=8, V=4, Nv=2, Nw=2, Nf=2, h0=True), 0.05),
]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name, problem, clip", CASES, ids=[c[0] for c in CASES])
def test_op_gradients_pass_validation(name, problem, clip, dtype, device):
    result = validate_training(problem.with_dtype(dtype), op_step(SMALL), seed=4, device=device, clip=clip)
    assert result.ok, result.reason()
    assert {c.name for c in result.checks} >= {"y", "h_T", "dq", "dk", "dv", "dW", "df", "dh0"}


def test_validation_catches_a_clipping_fault(device):
    """The op run without clipping must fail a check that asks for clipping."""
    problem = CASES[1][1].with_dtype("float32")
    wrong = op_step(SMALL)
    result = validate_training(problem, lambda x, clip, dy, dh: wrong(x, None, dy, dh), seed=4,
                               device=device, clip=0.05)
    assert not result.ok


def test_float64_falls_back_to_reference():
    p = Problem(B=1, S=3, K=4, V=2)
    q, k = torch.randn(1, 3, 1, 4, dtype=torch.float64), torch.randn(1, 3, 1, 4, dtype=torch.float64)
    y, h = m2rnn(q, k, torch.randn(1, 3, 1, 2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)[None],
                 torch.rand(1, 3, 1, dtype=torch.float64))
    assert y.dtype == torch.float64 and h.dtype == torch.float32 and p.S == 3


def test_bad_input_and_config_errors(device):
    def t(*shape):
        return torch.rand(*shape, device=device)
    q = t(1, 3, 1, 4)
    with pytest.raises(InputError, match="`v`"):
        m2rnn(q, q, t(2, 3, 1, 2), t(1, 2, 2), t(1, 3, 1))
    with pytest.raises(ValueError, match="gradient_clipping"):
        m2rnn(q, q, t(1, 3, 1, 2), t(1, 2, 2), t(1, 3, 1), gradient_clipping=-1)
    with pytest.raises(ValueError, match="BLOCK_K=3 not in"):
        m2rnn(q, q, t(1, 3, 1, 2), t(1, 2, 2), t(1, 3, 1), config={"forward": {"BLOCK_K": 3}})


@pytest.mark.parametrize("clip", [None, 0.5])
def test_packed_T_layout_equals_the_batched_one_with_gradients(clip, device):
    """(T, N, ...) with cu_seqlens, the authors' and FLA's packed layout: the same y (in that layout),
    h_T and gradients as (1, T, N, ...)."""
    g = torch.Generator().manual_seed(3)
    T, cu = 19, torch.tensor([0, 7, 19], dtype=torch.int32, device=device)

    def r(*shape):
        return torch.rand(*shape, generator=g).to(device)
    q, k, v, f = r(T, 2, 8) - 0.5, r(T, 1, 8) - 0.5, r(T, 2, 4) - 0.5, 0.5 + 0.4 * r(T, 2)
    W = torch.eye(4, device=device).repeat(2, 1, 1) + 0.1 * r(2, 4, 4)
    outs = []
    for layout in ("T", "1T"):
        xs = [t.clone().requires_grad_() for t in (q, k, v, W, f)]
        qi, ki, vi, Wi, fi = xs
        if layout == "1T":
            qi, ki, vi, fi = qi[None], ki[None], vi[None], fi[None]
        y, h = m2rnn(qi, ki, vi, Wi, fi, cu_seqlens=cu, gradient_clipping=clip)
        assert y.shape == ((T, 2, 4) if layout == "T" else (1, T, 2, 4))
        (y.square().sum() + h.sum()).backward()
        outs.append((y.reshape(T, 2, 4).detach(), h.detach(), [t.grad for t in xs]))
    (y0, h0, g0), (y1, h1, g1) = outs
    torch.testing.assert_close(y0, y1)
    torch.testing.assert_close(h0, h1)
    for a, b in zip(g0, g1):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b)


def test_packed_T_layout_equals_one_run_per_sequence(device):
    """Packed (T, N, ...) against each sequence run alone in the (B=1, S, N, ...) layout: y, h_T and
    every gradient (W's summed over the sequences)."""
    g = torch.Generator().manual_seed(5)
    lens = (6, 13, 2)
    T, cu = sum(lens), torch.tensor([0, 6, 19, 21], device=device)

    def r(*shape):
        return torch.rand(*shape, generator=g).to(device)
    q, k, v, f = r(T, 1, 8) - 0.5, r(T, 1, 8) - 0.5, r(T, 2, 4) - 0.5, 0.5 + 0.4 * r(T, 2)
    W, h0 = torch.eye(4, device=device).repeat(2, 1, 1) + 0.1 * r(2, 4, 4), 0.1 * r(3, 2, 8, 4)
    packed = [t.clone().requires_grad_() for t in (q, k, v, W, f, h0)]
    y, h = m2rnn(*packed, cu_seqlens=cu, gradient_clipping=0.5)
    (y.square().sum() + h.sum()).backward()
    alone = [t.clone().requires_grad_() for t in (q, k, v, W, f, h0)]
    ys, hs, start = [], [], 0
    for i, n in enumerate(lens):
        part = slice(start, start + n)
        yi, hi = m2rnn(*(t[part][None] for t in alone[:3]), alone[3], alone[4][part][None],
                       alone[5][i:i + 1], gradient_clipping=0.5)
        (yi.square().sum() + hi.sum()).backward()
        ys.append(yi[0])
        hs.append(hi)
        start += n
    torch.testing.assert_close(y, torch.cat(ys))
    torch.testing.assert_close(h, torch.cat(hs))
    for a, b in zip(packed, alone):
        torch.testing.assert_close(a.grad, b.grad)


def test_packed_T_layout_names_the_tensor_in_the_other_layout():
    q = torch.rand(9, 1, 4)
    with pytest.raises(InputError, match="`v` expected 3 dims \\(T, Nv, V\\), packed as q"):
        m2rnn(q, q, torch.rand(1, 9, 1, 2), torch.rand(1, 2, 2), torch.rand(9, 1),
              cu_seqlens=torch.tensor([0, 4, 9]))


def _same_as_eager(compiled, loss, ins) -> None:
    """The compiled loss and its gradient of every input equal the eager ones."""
    l1 = compiled(*ins)
    g1 = torch.autograd.grad(l1, ins)
    l0 = loss(*ins)
    g0 = torch.autograd.grad(l0, ins)
    torch.testing.assert_close(l1, l0)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b)


def test_torch_compile_fullgraph_matches_eager():
    p = Problem(B=2, S=6, K=8, V=4, Nv=2, Nw=2, Nf=2, h0=True, dtype="float32")
    from m2tune.inputs import make_inputs
    x = make_inputs(p, seed=0)
    ins = [t.float().requires_grad_(True) for t in (x.q, x.k, x.v, x.W, x.f, x.h0)]

    def loss(q, k, v, W, f, h0):
        y, h = m2rnn(q, k, v, W, f, h0, gradient_clipping=0.5)
        return (y * y).sum() + h.sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    _same_as_eager(compiled, loss, ins)


@pytest.mark.parametrize("max_seqlen", [None, 11, 20])
def test_packed_sequences_under_torch_compile_fullgraph(max_seqlen, device):
    """cu_seqlens traces without a host sync or a graph break (max_seqlen or not) and matches eager."""
    from m2tune.inputs import make_inputs
    lens = (5, 11, 3)
    p = Problem.varlen(lens, K=8, V=4, Nv=2, Nw=2, Nf=2, h0=True, dtype="float32")
    x = make_inputs(p, seed=1, device=device)
    cu = x.cu_seqlens
    ins = [t.float().requires_grad_(True) for t in (x.q[0], x.k[0], x.v[0], x.W, x.f[0], x.h0)]

    def loss(q, k, v, W, f, h0):
        y, h = m2rnn(q, k, v, W, f, h0, cu_seqlens=cu, max_seqlen=max_seqlen, gradient_clipping=0.5)
        return (y * y).sum() + h.sum()

    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    _same_as_eager(compiled, loss, ins)


@pytest.mark.parametrize("how, frames", [("dynamic", 1), ("mark_dynamic", 1), ("automatic", 2)])
def test_dynamic_shapes_one_compile_for_every_length(how, frames, device):
    """torch.compile(dynamic=True), mark_dynamic on B and S, and automatic dynamic (a static graph,
    then one dynamic one after the second size): no compile per length (the lookup runs inside the
    op for the sizes it gets), equal to eager in loss and gradients."""
    from torch._dynamo.testing import CompileCounterWithBackend

    from m2tune.inputs import make_inputs

    def loss(q, k, v, W, f, h0):
        y, h = m2rnn(q, k, v, W, f, h0, gradient_clipping=0.5)
        return (y * y).sum() + h.sum()

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(loss, fullgraph=True, backend=counter, dynamic=True if how == "dynamic" else None)
    # sizes that never coincide with another dim: torch's duck sizing would guard on B == Nv
    for B, S in ((3, 5), (5, 18), (7, 9))[:frames + 1]:
        # one head: half the interpreted programs of two, and no head count for B to coincide with
        p = Problem(B=B, S=S, K=8, V=4, h0=True, dtype="float32")
        x = make_inputs(p, seed=S, device=device)
        ins = [t.float().requires_grad_(True) for t in (x.q, x.k, x.v, x.W, x.f, x.h0)]
        if how == "mark_dynamic":
            for t in ins[:2] + ins[2:3] + ins[4:5]:
                torch._dynamo.mark_dynamic(t, 0)
                torch._dynamo.mark_dynamic(t, 1)
            torch._dynamo.mark_dynamic(ins[5], 0)
        _same_as_eager(compiled, loss, ins)
    assert counter.frame_count == frames, counter.frame_count


@pytest.mark.gpu
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_reduce_overhead_cuda_graphs_match_eager(packed):
    """torch.compile(mode="reduce-overhead"): inductor captures the forward and the backward in CUDA
    graphs (the kernels' configs are looked up inside the op before capture, nothing syncs with the
    host); every replay, with new values in the same input buffers, equals eager in loss and in the
    gradient of every input."""
    from m2tune.inputs import TORCH_DTYPES, cast, make_inputs
    lens = (37, 64, 5)
    if packed:
        p = Problem.varlen(lens, K=16, V=16, Nq=1, Nk=1, Nv=4, Nw=4, Nf=4, h0=True, dtype="bfloat16")
    else:
        p = Problem(B=3, S=77, K=16, V=16, Nq=1, Nk=1, Nv=4, Nw=4, Nf=4, h0=True, dtype="bfloat16")
    cu = make_inputs(p, seed=0, device="cuda").cu_seqlens

    def loss(q, k, v, W, f, h0):
        y, h = m2rnn(q, k, v, W, f, h0, cu_seqlens=cu, max_seqlen=max(lens) if packed else None,
                     gradient_clipping=0.5)
        return (y.float() ** 2).sum() + h.sum()

    def grads(fn, ins):
        out = fn(*ins)
        return [out.detach().clone()] + [g.clone() for g in torch.autograd.grad(out, ins)]

    torch._dynamo.reset()
    compiled = torch.compile(loss, mode="reduce-overhead", fullgraph=True)
    leaves = None
    for seed in range(4):          # warm-up, record, then replays with new values in the same buffers
        x = cast(make_inputs(p, seed=seed, device="cuda"), TORCH_DTYPES[p.dtype])   # bf16: the kernels run
        fresh = [x.q, x.k, x.v, x.W, x.f, x.h0]
        if packed:              # the (T, N, ...) layout of packed q, k, v, f
            fresh = [t[0] if i in (0, 1, 2, 4) else t for i, t in enumerate(fresh)]
        if leaves is None:
            leaves = [t.detach().clone().requires_grad_(True) for t in fresh]
        with torch.no_grad():
            for leaf, t in zip(leaves, fresh):
                leaf.copy_(t)
        got, want = grads(compiled, leaves), grads(loss, leaves)
        for a, b, name in zip(got, want, ("loss", "q", "k", "v", "W", "f", "h0")):
            torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2, msg=lambda m: f"{name}, call {seed}: {m}")


def test_the_authors_keyword_names_give_the_same_call():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.rand(2, 5, 1, 4, generator=g) for _ in range(3))
    W, f, h0 = torch.rand(1, 4, 4, generator=g), torch.rand(2, 5, 1, generator=g), torch.rand(2, 1, 4, 4, generator=g)
    ours = m2rnn(q, k, v, W, f, h0, gradient_clipping=1.0)
    theirs = m2rnn(query=q, key=k, value=v, weight=W, forget_input=f, input_state=h0, gradient_clipping=1.0)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    with pytest.raises(TypeError, match="`q` and `query` name the same input"):
        m2rnn(q, k, v, W, f, query=q)
    with pytest.raises(TypeError, match="missing the input `f` \\(or `forget_input`\\)"):
        m2rnn(query=q, key=k, value=v, weight=W)


def test_a_traced_packed_reference_call_says_why_it_cannot_run():
    """float64 runs the PyTorch reference, which walks the packed sequences on the host."""
    q = torch.rand(9, 1, 4, dtype=torch.float64)
    args = (q, q, torch.rand(9, 1, 2, dtype=torch.float64), torch.rand(1, 2, 2, dtype=torch.float64),
            torch.rand(9, 1, dtype=torch.float64))
    cu = torch.tensor([0, 4, 9])
    torch._dynamo.reset()
    with pytest.raises(Exception, match="runs the PyTorch reference .* cannot be traced"):
        torch.compile(lambda *a: m2rnn(*a, cu_seqlens=cu, max_seqlen=5)[0].sum(), fullgraph=True,
                      backend="aot_eager")(*args)


def test_max_seqlen_is_checked():
    q = torch.rand(9, 1, 4)
    args = (q, q, torch.rand(9, 1, 2), torch.rand(1, 2, 2), torch.rand(9, 1))
    cu = torch.tensor([0, 4, 9])
    with pytest.raises(InputError, match="`max_seqlen` expected at least the longest packed sequence, 5"):
        m2rnn(*args, cu_seqlens=cu, max_seqlen=4)
    with pytest.raises(ValueError, match="`max_seqlen` expected a positive int with cu_seqlens"):
        m2rnn(*args, cu_seqlens=cu, max_seqlen=2.5)
    with pytest.raises(ValueError, match="without cu_seqlens"):
        m2rnn(q[None], q[None], torch.rand(1, 9, 1, 2), torch.rand(1, 2, 2), torch.rand(1, 9, 1), max_seqlen=9)



def test_the_plan_says_whether_the_backward_is_compiled_ahead():
    """The forward starts compiling the backward only for a training step on a GPU."""
    import json

    from m2tune import compile_ahead, ops
    from m2tune.inputs import make_inputs
    p = Problem(B=1, S=8, K=8, V=4, dtype="float32")
    fwd, bwd = ops.configs_for(p, SMALL, interpreter=True)
    for training in (True, False):
        assert json.loads(ops._plan_json(fwd, bwd, 0.0, training))["training"] is training
    compile_ahead.forget()
    plan = ops._plan_json(fwd, bwd, 0.0, True)
    ops._compile_backward_ahead(plan, json.loads(plan), bwd, p, make_inputs(p, seed=0), (1, 1, 1, 8, 4))  # CPU
    assert compile_ahead.start(ops._compile_key(plan, p), lambda: None)        # so nothing started
    compile_ahead.forget()


@pytest.mark.gpu
def test_a_training_step_compiles_its_backward_ahead():
    """On the GPU the first forward of a training plan starts the backward's compile in a thread;
    the backward launch then waits for it and finds the kernel compiled (no second compile)."""
    from m2tune import compile_ahead, ops, variants
    from m2tune.inputs import make_inputs
    compile_ahead.forget()
    p = Problem(B=2, S=77, K=16, V=16, Nv=2, Nw=2, Nf=2, dtype="bfloat16")   # a shape no other test runs
    x = make_inputs(p, seed=0, device="cuda")
    ins = [t.to(torch.bfloat16).requires_grad_(True) for t in (x.q, x.k, x.v, x.W, x.f)]
    config = {"forward": {"MATMUL": "dot_bf16x2", "TANH": "approx", "BLOCK_K": 16},
              "backward": {"MATMUL": "dot_bf16", "TANH": "approx", "BLOCK_K": 16, "CKPT": 32}}
    y, h = m2rnn(*ins, config=config)
    key = ops._compile_key(ops._plan(p, "cuda", config, 0.0, True)[1], p)
    compile_ahead.wait(key)
    assert compile_ahead.error(key) is None
    kernel = variants.load("m2rnn_bwd").m2rnn_bwd_kernel
    before = sum(len(c) for c in kernel.device_caches.values()) if hasattr(kernel, "device_caches") else None
    (y.float().sum() + h.sum()).backward()
    torch.cuda.synchronize()
    if before is not None:
        assert sum(len(c) for c in kernel.device_caches.values()) == before
    assert all(torch.isfinite(t.grad).all() for t in ins)
    compile_ahead.forget()


def test_the_checkpoints_are_not_differentiated(device):
    """The forward op's checkpoints feed only its own backward: marked non-differentiable and with
    gradients not materialised, autograd makes no zero gradient of their size (on the H200 that was
    553 MiB of a paper-7b step's 1413 MiB peak at CKPT=16); a loss on h_T alone still gets every
    gradient right (dy is then None inside the backward)."""
    from m2tune import ops
    from m2tune.inputs import Inputs, make_inputs
    from m2tune.kernel_variants.m2rnn.naive import m2rnn_reference
    if not ops._kernels_available(torch.device(device)):
        pytest.skip("the op's kernels do not run here (no GPU, interpreter off)")
    p = Problem(B=1, S=21, K=8, V=4, h0=True, dtype="float32")
    x = make_inputs(p, seed=0, device=device)
    ins = [t.float().requires_grad_(True) for t in (x.q, x.k, x.v, x.W, x.f, x.h0)]
    _, plan, ckpt_every, n_seq, n_chunks = ops._plan(ops.problem_of(Inputs(*ins, None)), device, None, 0.0, True)
    y, h_T, ckpt = torch.ops.m2tune.m2rnn_fwd(*ins, None, plan, ckpt_every, n_seq, n_chunks, 0)
    assert y.requires_grad and h_T.requires_grad and not ckpt.requires_grad
    got = torch.autograd.grad(h_T.sum(), ins)
    ref = [t.detach().double().requires_grad_(True) for t in ins]
    want = torch.autograd.grad(m2rnn_reference(*ref)[1].sum(), ref, materialize_grads=True)   # dq: 0
    for name, a, b in zip(("q", "k", "v", "W", "f", "h0"), got, want):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5, msg=lambda m: f"d{name}: {m}")
