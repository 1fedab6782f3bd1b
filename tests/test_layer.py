"""The M2RNN layer on the real op: generation, packed sequences, gradients, init, errors, torch.compile."""
import pytest
import torch

from m2tune.layer import M2RNN, M2RNNState

HIDDEN, N, K, V, S = 32, 4, 8, 4, 7


def make(gate="sigmoid", **kw):
    torch.manual_seed(0)
    kw = {"num_q_heads": 2, "num_w_heads": 2, **kw}
    return M2RNN(HIDDEN, N, K, V, forget_gate=gate, **kw)


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("gate", ["sigmoid", "softplus"])
def test_step_by_step_generation_equals_full_sequence(gate):
    layer = make(gate)
    assert layer.use_conv and layer.use_residual
    x = torch.randn(2, S, HIDDEN)
    with torch.no_grad():
        y, final = layer(x)
        state, ys = None, []
        for t in range(S):
            out, state = layer(x[:, t:t + 1], state)
            ys.append(out)
    close(torch.cat(ys, dim=1), y)
    close(state.h, final.h)
    close(state.conv, final.conv)
    assert final.h.dtype == torch.float32 and final.h.shape == (2, N, K, V)


def test_packed_sequences_equal_separate_runs():
    layer = make("softplus", bias=True)
    lens = [3, 1, 5]                        # a length-1 sequence: its conv window reaches into the state
    xs = [torch.randn(1, n, HIDDEN) for n in lens]
    cu = torch.tensor([0, 3, 4, 9], dtype=torch.int32)
    init = M2RNNState(0.1 * torch.randn(3, N, K, V), torch.randn(3, layer.conv_dim, 3))
    with torch.no_grad():
        y, state = layer(torch.cat(xs, dim=1), init, cu_seqlens=cu)
        alone = [layer(x, M2RNNState(init.h[i:i + 1], init.conv[i:i + 1])) for i, x in enumerate(xs)]
    close(y, torch.cat([a[0] for a in alone], dim=1))
    close(state.h, torch.cat([a[1].h for a in alone]))
    close(state.conv, torch.cat([a[1].conv for a in alone]))


@pytest.mark.parametrize("gate", ["sigmoid", "softplus"])
def test_gradients_reach_every_parameter(gate):
    layer = make(gate, bias=True, gradient_clipping=1.0)
    x = torch.randn(2, S, HIDDEN, requires_grad=True)
    init = M2RNNState((0.1 * torch.randn(2, N, K, V)).requires_grad_(True),
                      torch.randn(2, layer.conv_dim, 3, requires_grad=True))
    y, state = layer(x, init)
    (y.square().sum() + state.h.sum()).backward()
    names = {n for n, _ in layer.named_parameters()}
    assert {"W", "D", "conv_weight", "conv_bias", "norm_weight"} <= names
    assert ("A_log" in names) == (gate == "softplus")
    for name, p in list(layer.named_parameters()) + [("x", x), ("state.h", init.h), ("state.conv", init.conv)]:
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_W_starts_at_identity():
    layer = make()
    assert layer.W.shape == (2, V, V)
    torch.testing.assert_close(layer.W.detach(), torch.eye(V).expand(2, V, V))


def test_bad_inputs_name_the_tensor():
    layer = make()
    with pytest.raises(ValueError, match="`x`.*hidden_size=32"):
        layer(torch.randn(2, S, HIDDEN + 1))
    with pytest.raises(ValueError, match="`x`"):
        layer(torch.randn(S, HIDDEN))
    with pytest.raises(ValueError, match="`state.h`"):
        layer(torch.randn(2, S, HIDDEN), M2RNNState(torch.zeros(2, N, K, V + 1), torch.zeros(2, layer.conv_dim, 3)))
    with pytest.raises(ValueError, match="`state.conv`"):
        layer(torch.randn(2, S, HIDDEN), M2RNNState(torch.zeros(2, N, K, V), torch.zeros(2, layer.conv_dim, 4)))
    with pytest.raises(ValueError, match="`state.h`"):   # one state row per packed sequence
        layer(torch.randn(1, S, HIDDEN), M2RNNState(torch.zeros(1, N, K, V), torch.zeros(1, layer.conv_dim, 3)),
              cu_seqlens=torch.tensor([0, 3, S]))
    with pytest.raises(ValueError, match="`cu_seqlens`"):
        layer(torch.randn(1, S, HIDDEN), cu_seqlens=torch.tensor([0, 3, S + 1]))
    with pytest.raises(ValueError, match="`x`.*batch size 1"):
        layer(torch.randn(2, S, HIDDEN), cu_seqlens=torch.tensor([0, 3, S]))
    with pytest.raises(TypeError, match="`x` is torch.bfloat16 but the layer's weights are torch.float32"):
        layer(torch.randn(2, S, HIDDEN, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="num_w_heads"):
        M2RNN(HIDDEN, N, K, V, num_w_heads=3)
    with pytest.raises(ValueError, match="forget_gate"):
        M2RNN(HIDDEN, N, K, V, forget_gate="tanh")


def test_kernel_choices_without_kernels_say_the_reference_runs(monkeypatch):
    import m2tune.gpu
    import m2tune.variants
    monkeypatch.setattr(m2tune.variants, "interpreting", lambda: False)
    monkeypatch.setattr(m2tune.gpu, "current_gpu", lambda: None)
    choices = make().kernel_choices(2, S)
    assert {c.kernel for c in choices.values()} == {"reference"}
    assert all(c.config is None and "PyTorch reference" in c.describe() for c in choices.values())


def _compiled_matches_eager(backend):
    torch._dynamo.reset()
    layer = make("softplus", gradient_clipping=1.0)
    x = torch.randn(2, S, HIDDEN)
    init = M2RNNState(0.1 * torch.randn(2, N, K, V), torch.randn(2, layer.conv_dim, 3))

    def run(fn):
        layer.zero_grad()
        y, state = fn(x, init)
        (y.square().sum() + state.h.sum()).backward()
        return y.detach(), state.h.detach(), {n: p.grad.clone() for n, p in layer.named_parameters()}

    y0, h0, g0 = run(layer)
    y1, h1, g1 = run(torch.compile(layer, fullgraph=True, backend=backend))
    close(y1, y0)
    close(h1, h0)
    for name in g0:
        close(g1[name], g0[name])


def test_torch_compile_fullgraph_matches_eager_aot_eager():
    _compiled_matches_eager("aot_eager")


@pytest.mark.slow   # inductor's first CPU compile takes ~25 s on 2 cores
def test_torch_compile_fullgraph_matches_eager_inductor():
    _compiled_matches_eager("inductor")
