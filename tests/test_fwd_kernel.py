"""The forward template against the float64 reference, through the validator."""
import pytest

from m2tune import variants
from m2tune.problem import Problem
from m2tune.measure.validate import validate_forward, variant_forward

fwd, FWD = variants.load("m2rnn_fwd"), variants.spec("m2rnn_fwd")


def cfg(**kw):
    return FWD.DEFAULT.with_params(**kw)


ODD = Problem(B=3, S=7, K=24, V=12, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2)
SHARED = Problem(B=2, S=6, K=16, V=16, Nq=2, Nk=1, Nv=4, Nw=1, Nf=2, h0=True)
VARLEN = Problem.varlen([5, 9, 2], K=20, V=12, Nq=1, Nk=1, Nv=2, Nw=2, Nf=1, h0=True)

CASES = [
    # (problem, config, lengths)
    (ODD, cfg(BLOCK_K=8, MATMUL="fma", PREFETCH=0), None),             # K split into 3, y by atomics
    (ODD, cfg(BLOCK_K=32, BLOCK_B=2, MATMUL="dot_ieee", PREFETCH=2), None),
    (ODD, cfg(BLOCK_K=16, BLOCK_B=4, MATMUL="dot_ieee", PREFETCH=1, num_warps=1), (37, 148)),
    (SHARED, cfg(BLOCK_K=4, BLOCK_B=2, MATMUL="fma", PREFETCH=2, num_warps=2), None),
    (SHARED, cfg(BLOCK_K=16, MATMUL="dot_ieee", PREFETCH=1), None),
    (VARLEN, cfg(BLOCK_K=8, BLOCK_B=2, MATMUL="fma", PREFETCH=1), None),
    (VARLEN, cfg(BLOCK_K=32, BLOCK_B=4, MATMUL="dot_ieee", PREFETCH=2, num_warps=4), None),
]
LOW_PRECISION = ["dot_tf32", "dot_bf16"]


def _ids(case):
    p, c, _ = case
    kind = "varlen" if p.is_varlen else ("shared" if p.N > 2 else "odd")
    return f"{kind}-{c['MATMUL']}-BK{c['BLOCK_K']}-BB{c['BLOCK_B']}-P{c['PREFETCH']}"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_honest_configs_pass(case, dtype, device):
    problem, config, lengths = case
    problem = problem.with_dtype(dtype)
    assert FWD.check(problem, config, interpreter=variants.interpreting()) is None
    result = validate_forward(problem, variant_forward(fwd, config), seed=11, device=device,
                              lengths=lengths)
    assert result.ok, result.reason()
    assert {c.name for c in result.checks} == {"y", "h_T"}
    assert len({c.length for c in result.checks}) == 2


@pytest.mark.parametrize("matmul", LOW_PRECISION)
def test_low_precision_matmul_passes_in_bf16(matmul, device):
    problem = SHARED.with_dtype("bfloat16")
    config = cfg(BLOCK_K=16, MATMUL=matmul)
    # judged against the rounding the spec declares for these products (the inference forward's)
    result = validate_forward(problem, variant_forward(fwd, config), seed=5, device=device,
                              rounding=FWD.rounding(config))
    assert result.ok, result.reason()


def test_split_bf16_products_keep_the_state_accurate(device):
    """dot_bf16x2 (H in two bf16 halves, two products) keeps h_T ~100x closer to float64 than
    dot_bf16 over 64 steps, near the fp32-state products; the forward spec lets it train."""
    problem = Problem(B=2, S=64, K=16, V=16, Nq=1, Nk=1, Nv=2, Nw=2, Nf=2, dtype="bfloat16", h0=True)
    errors = {}
    for matmul in ("dot_bf16", "dot_bf16x2", "dot_ieee"):
        config = cfg(BLOCK_K=16, MATMUL=matmul)
        result = validate_forward(problem, variant_forward(fwd, config), seed=1, device=device,
                                  lengths=(64,), rounding=FWD.rounding(config))
        assert result.ok, result.reason()
        errors[matmul] = next(c.e_cand for c in result.checks if c.name == "h_T")
    assert errors["dot_bf16x2"] < errors["dot_bf16"] / 100, errors
    assert errors["dot_bf16x2"] < 2e-4, errors
    assert FWD.training_reason(cfg(MATMUL="dot_bf16x2")) is None
    assert FWD.training_reason(cfg(MATMUL="dot_bf16")) is not None
    assert "exact only for bfloat16" in FWD.check(problem.with_dtype("float16"), cfg(MATMUL="dot_bf16x2"))


def test_fp32_errors_are_near_fp32_rounding(device):
    problem = ODD.with_dtype("float32")
    result = validate_forward(problem, variant_forward(fwd, cfg(BLOCK_K=8)), seed=3, device=device)
    assert result.ok and result.max_error < 1e-5, result.checks


@pytest.mark.parametrize("config, reason", [
    (cfg(BLOCK_K=64), "twice K"),
    (cfg(BLOCK_B=8), "twice the 3 sequences"),
    (cfg(MATMUL="dot_tf32"), "precision"),
    (cfg(BLOCK_K=32, BLOCK_B=2, MATMUL="fma", num_warps=1), "registers"),
    (FWD.DEFAULT.with_params(BLOCK_K=3), "BLOCK_K=3 not in"),
])
def test_impossible_configs_rejected_with_reason(config, reason):
    problem = Problem(B=3, S=8, K=24, V=64, dtype="float32")
    why = FWD.check(problem, config)
    assert why is not None and reason in why


def test_approx_tanh_rejected_in_interpreter():
    why = FWD.check(ODD, cfg(TANH="approx"), interpreter=True)
    assert why is not None and "interpreter" in why
    assert FWD.check(ODD, cfg(TANH="approx"), interpreter=False) is None


@pytest.mark.gpu
@pytest.mark.parametrize("matmul", ["fma", "dot_tf32", "dot_bf16"])
def test_gpu_approx_tanh_passes(matmul):
    problem = Problem(B=4, S=64, K=64, V=16, Nv=8, Nw=8, Nf=8)
    config = cfg(BLOCK_K=16, MATMUL=matmul, TANH="approx", num_warps=1)
    result = validate_forward(problem, variant_forward(fwd, config), seed=1, device="cuda",
                              rounding=FWD.rounding(config))
    assert result.ok, result.reason()
