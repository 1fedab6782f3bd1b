"""Bad input gets an error that names the tensor, what was expected and what was given."""
import pytest
import torch

from m2tune.inputs import InputError, Inputs, problem_of
from m2tune.problem import Problem


def good(B=2, S=5, K=8, V=4, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2, dtype=torch.float32):
    return dict(q=torch.randn(B, S, Nq, K, dtype=dtype), k=torch.randn(B, S, Nk, K, dtype=dtype),
                v=torch.randn(B, S, Nv, V, dtype=dtype), W=torch.randn(Nw, V, V, dtype=dtype),
                f=torch.rand(B, S, Nf, dtype=dtype))


def test_good_inputs_give_their_problem():
    p = problem_of(Inputs(**good()))
    assert p == Problem(B=2, S=5, K=8, V=4, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2, dtype="float32")


def _error(**changes):
    x = good()
    x.update(changes)
    with pytest.raises(InputError) as info:
        problem_of(Inputs(**x))
    return str(info.value)


@pytest.mark.parametrize("changes, names", [
    (dict(v=torch.randn(3, 5, 2, 4)), ["`v`", "B (as q)=2", "(3, 5, 2, 4)"]),
    (dict(k=torch.randn(2, 5, 1, 7)), ["`k`", "K (as q)=8", "(2, 5, 1, 7)"]),
    (dict(W=torch.randn(2, 4, 5)), ["`W`", "V (as v)=4"]),
    (dict(f=torch.rand(2, 5)), ["`f`", "3 dims", "(2, 5)"]),
    (dict(k=torch.randn(2, 5, 1, 8, dtype=torch.float64)), ["`k`", "torch.float32 (as q)", "torch.float64"]),
    (dict(q=torch.randint(0, 3, (2, 5, 1, 8))), ["`q`", "dtype", "torch.int64"]),
    (dict(W=torch.randn(2, 4, 4, device="meta")), ["`W`", "device cpu (as q)", "meta"]),
    (dict(v=torch.randn(2, 5, 3, 4), W=torch.randn(3, 4, 4), f=torch.rand(2, 5, 2)),
     ["`f`", "dividing N=3", "2"]),
    (dict(h0=torch.randn(2, 2, 8, 5)), ["`h0`", "(2, 2, 8, 4)", "(2, 2, 8, 5)"]),
    (dict(q="not a tensor"), ["`q`", "torch.Tensor", "str"]),
    # one tensor alone holds the largest head count and the others do not divide it: that one
    (dict(k=torch.randn(2, 5, 3, 8)), ["`k`", "the other head counts divide", "q: 1", "v: 2", "got 3"]),
    # W with 4 heads makes N=4: h0 sized for 2 heads names where N came from
    (dict(W=torch.randn(4, 4, 4), h0=torch.randn(2, 2, 8, 4)), ["`h0`", "(2, 4, 8, 4)", "head count of W"]),
    (dict(q=torch.randn(10, 1, 8)), ["`q`", "4 dims", "pass cu_seqlens", "(T, Nq, K)"]),
])
def test_bad_tensor_named_with_expected_and_actual(changes, names):
    message = _error(**changes)
    for part in names:
        assert part in message, message


def _packed(T=10):
    x = good(B=1, S=T)
    return x


@pytest.mark.parametrize("cu, expect", [
    (torch.tensor([0, 4, 4, 10]), ["`cu_seqlens`", "strictly increasing", "cu_seqlens[1]=4"]),
    (torch.tensor([0, 6, 3, 10]), ["`cu_seqlens`", "strictly increasing", "cu_seqlens[1]=6"]),
    (torch.tensor([1, 4, 10]), ["`cu_seqlens`", "start at 0"]),
    (torch.tensor([0, 4, 9]), ["`cu_seqlens`", "T=10", "9"]),
    (torch.tensor([0.0, 4.0, 10.0]), ["`cu_seqlens`", "int32 or int64"]),
    (torch.tensor([[0, 10]]), ["`cu_seqlens`", "1-d"]),
])
def test_bad_cu_seqlens(cu, expect):
    x = _packed()
    with pytest.raises(InputError) as info:
        problem_of(Inputs(**x, cu_seqlens=cu))
    for part in expect:
        assert part in str(info.value), str(info.value)


def test_a_non_tensor_is_a_type_error_naming_the_argument():
    from m2tune.ops import m2rnn
    x = good()
    with pytest.raises(TypeError, match="`k` expected a torch.Tensor.*got list"):
        m2rnn(x["q"], x["k"].tolist(), x["v"], x["W"], x["f"])
    with pytest.raises(TypeError, match="`h0` expected a torch.Tensor"):
        m2rnn(x["q"], x["k"], x["v"], x["W"], x["f"], h0=[0.0])


def test_varlen_needs_batch_one_and_h0_per_sequence():
    x = good(B=2, S=10)
    with pytest.raises(InputError, match="`q` expected batch size 1"):
        problem_of(Inputs(**x, cu_seqlens=torch.tensor([0, 4, 10])))
    x = _packed()
    p = problem_of(Inputs(**x, cu_seqlens=torch.tensor([0, 4, 10]), h0=torch.zeros(2, 2, 8, 4)))
    assert p.seqlens == (4, 6) and p.B == 2 and p.S == 6 and p.h0
    with pytest.raises(InputError, match="`h0` expected shape \\(2, 2, 8, 4\\)"):
        problem_of(Inputs(**x, cu_seqlens=torch.tensor([0, 4, 10]), h0=torch.zeros(1, 2, 8, 4)))


def test_problem_rejects_nonsense():
    with pytest.raises(ValueError, match="Nv=3 does not divide N=4"):
        Problem(B=1, S=1, K=4, V=4, Nq=4, Nv=3)
    with pytest.raises(ValueError, match="dtype"):
        Problem(B=1, S=1, K=4, V=4, dtype="int8")
    with pytest.raises(ValueError, match="varlen"):
        Problem(B=1, S=3, K=4, V=4, seqlens=(3, 2))
