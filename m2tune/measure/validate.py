"""How right is right: a candidate kernel against the float64 reference.

The recurrence amplifies rounding, so a fixed tolerance would either pass a
broken bf16 kernel or fail an honest one. Instead each output's error is
compared with the error of the plain reference run at the candidate's dtype:

    e_ref  = err(reference in dtype, reference in float64)
    e_cand = err(candidate,          reference in float64)
    pass  <=> e_cand <= factor * e_ref + floor     (for y, h_T; per sequence)

err is the relative Frobenius error taken per sequence (batch element or
packed sequence) and maximised, so a fault confined to one sequence cannot
hide in the norm of the others. Inputs are fresh draws for every check,
outputs are poisoned with NaN before each launch, and every check runs at two
sequence lengths, a short one and four times it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable, Optional, Sequence

import torch

from .. import status
from ..inputs import TORCH_DTYPES, Inputs, cast, make_inputs, problem_of
from ..kernel_variants.m2rnn.naive import m2rnn_reference
from ..problem import KernelConfig, Problem


@dataclass(frozen=True)
class Tolerance:
    factor: float
    floor: float
    why: str
    cap: float = float("inf")      # absolute ceiling, whatever the reference at dtype does

    def limit(self, e_ref: float) -> float:
        return min(self.factor * e_ref + self.floor, self.cap)


# One table for every check. The factor allows a kernel that rounds
# differently from the reference (fp32 state instead of the dtype's, another
# summation order, tanh formula); the floor covers outputs whose reference
# error is itself tiny. Planted faults (tests/test_faults.py) land at 1e-2 or
# more in fp32 and 1e-1 or more in bf16, far outside these bounds.
TOLERANCES: dict[str, Tolerance] = {
    "float32": Tolerance(8.0, 2e-5, "fp32 reference lands near 1e-7; a kernel that sums in another "
                                    "order or uses exp-based tanh lands within a few times that; "
                                    "2e-5 is 100x under the smallest planted fault"),
    "bfloat16": Tolerance(2.0, 2e-3, "the bf16 reference keeps its state in bf16 and lands near 1e-2; "
                                     "an honest kernel (fp32 state, bf16 I/O) lands below it; a kernel "
                                     "may be up to 2x worse than the plain bf16 recurrence. Cap 5e-2: "
                                     "the plain bf16 recurrence's gradients are off by O(1) at S=512 "
                                     "(H200, bench/results/2026-11-29-h200-training), so the factor "
                                     "alone would admit any gradient; fp32-state kernels land near 3e-3",
                          cap=5e-2),
    "float16": Tolerance(2.0, 5e-4, "as bf16, with 3 more mantissa bits", cap=2e-2),
}


@dataclass
class OutputCheck:
    name: str
    length: int
    e_cand: float
    e_ref: float
    limit: float
    finite: bool

    @property
    def ok(self) -> bool:
        return self.finite and self.e_cand <= self.limit

    def describe(self) -> str:
        state = "ok" if self.ok else ("NaN/Inf left in output" if not self.finite else "too large")
        return (f"{self.name}@S={self.length}: err {self.e_cand:.2e} vs limit {self.limit:.2e} "
                f"(reference at dtype {self.e_ref:.2e}) {state}")


@dataclass
class ValidationResult:
    checks: list[OutputCheck] = field(default_factory=list)
    error: Optional[str] = None      # a launch that raised
    error_kind: Optional[str] = None  # its status category (m2tune.status)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def max_error(self) -> float:
        return max((c.e_cand for c in self.checks), default=float("nan"))

    @property
    def status(self) -> str:
        if self.error is not None:
            return self.error_kind or status.LAUNCH_ERROR
        return status.OK if self.ok else status.WRONG_RESULT

    def reason(self) -> Optional[str]:
        if self.error:
            return self.error
        bad = [c.describe() for c in self.checks if not c.ok]
        return "; ".join(bad) if bad else None


def per_sequence(t: torch.Tensor, problem: Problem, time_dim: bool) -> list[torch.Tensor]:
    """Split an output into one tensor per sequence (time-major outputs split by cu_seqlens)."""
    if not time_dim:
        return list(t.unbind(0))
    if problem.is_varlen:
        return list(torch.split(t[0], list(problem.seqlens), dim=0))
    return list(t.unbind(0))


def relative_error(a: torch.Tensor, ref: torch.Tensor, problem: Problem, time_dim: bool) -> float:
    """Max over sequences of ||a - ref||_F / ||ref||_F (in float64)."""
    worst = 0.0
    for x, r in zip(per_sequence(a.double(), problem, time_dim),
                    per_sequence(ref.double(), problem, time_dim)):
        denom = r.norm().item()
        err = (x - r).norm().item() / max(denom, 1e-300)
        if err != err:          # NaN
            return float("nan")
        worst = max(worst, err)
    return worst


def default_lengths(problem: Problem) -> tuple[int, int]:
    """A short length and four times it, the long one being the problem's own."""
    short = max(1, problem.S // 4)
    return short, 4 * short


# A forward candidate: writes y and h_T (both pre-poisoned) for the inputs.
ForwardFn = Callable[[Problem, Inputs, torch.Tensor, torch.Tensor], None]


def variant_forward(module: ModuleType, config: KernelConfig) -> ForwardFn:
    def run(problem: Problem, x: Inputs, y: torch.Tensor, h_T: torch.Tensor) -> None:
        module.launch(problem, config, x, y, h_T)
    return run


def _checks(problem: Problem, lengths, seed: int, device):
    """Per length: (index, S, problem at S, inputs in the candidate's dtype, the same values in float64).

    The float64 reference runs on exactly the rounded values the candidate sees.
    """
    dtype = TORCH_DTYPES[problem.dtype]
    for i, S in enumerate(lengths or default_lengths(problem)):
        p = problem.with_length(S)
        x_dt = cast(make_inputs(p, seed=seed * 1000 + i, device=device), dtype)
        yield i, S, p, x_dt, cast(x_dt, torch.float64, state=torch.float64)


def validate_forward(problem: Problem, forward: ForwardFn, *, seed: int,
                     device: str | torch.device = "cpu",
                     lengths: Optional[Sequence[int]] = None) -> ValidationResult:
    """Check a forward candidate at two lengths on fresh inputs; never raises for a bad kernel."""
    dtype, tol, result = TORCH_DTYPES[problem.dtype], TOLERANCES[problem.dtype], ValidationResult()
    for i, S, p, x_dt, x64 in _checks(problem, lengths, seed, device):
        with torch.no_grad():
            y64, h64 = m2rnn_reference(*_args(x64), cu_seqlens=x64.cu_seqlens)
            y_dt, h_dt = m2rnn_reference(*_args(x_dt), cu_seqlens=x_dt.cu_seqlens)
        y = torch.full(y64.shape, float("nan"), dtype=dtype, device=device)
        h_T = torch.full(h64.shape, float("nan"), dtype=torch.float32, device=device)
        try:
            forward(p, x_dt, y, h_T)
            if y.is_cuda:
                torch.cuda.synchronize(y.device)
        except Exception as exc:  # a candidate that raises is a failed candidate, not a crash
            result.error = f"launch failed at S={S}: {type(exc).__name__}: {exc}"
            result.error_kind = status.classify(exc)
            return result
        for name, out, ref, low, time_dim in (("y", y, y64, y_dt, True), ("h_T", h_T, h64, h_dt, False)):
            e_ref = relative_error(low, ref, p, time_dim)
            e = relative_error(out, ref, p, time_dim)
            finite = bool(torch.isfinite(out).all())
            result.checks.append(OutputCheck(name, S, e, e_ref, tol.limit(e_ref), finite))
    return result


def _args(x: Inputs):
    return x.q, x.k, x.v, x.W, x.f, x.h0


# A training candidate: (inputs in dtype, clip, dy, dh_T) -> (y, h_T, {name: grad}).
TrainFn = Callable[[Inputs, Optional[float], torch.Tensor, torch.Tensor],
                   tuple[torch.Tensor, torch.Tensor, dict]]
GRAD_NAMES = ("q", "k", "v", "W", "f", "h0")


def _reference_grads(x: Inputs, clip, dy, dh_T, dtype):
    leaves = {n: getattr(x, n).detach().to(dtype).requires_grad_(True)
              for n in GRAD_NAMES if getattr(x, n) is not None}
    y, h = m2rnn_reference(*(leaves.get(n) for n in GRAD_NAMES), cu_seqlens=x.cu_seqlens,
                           gradient_clipping=clip)
    grads = torch.autograd.grad((y, h), list(leaves.values()), (dy.to(y.dtype), dh_T.to(h.dtype)))
    return y.detach(), h.detach(), dict(zip(leaves, grads))


def validate_training(problem: Problem, train: TrainFn, *, seed: int, device: str | torch.device = "cpu",
                      clip: Optional[float] = None,
                      lengths: Optional[Sequence[int]] = None) -> ValidationResult:
    """Forward outputs and every input gradient against float64 autograd, at two lengths.

    dy and dh_T are fresh random draws; gradients are compared as whole tensors
    (relative Frobenius) under the same factor-and-floor table as the forward.
    """
    dtype, tol, result = TORCH_DTYPES[problem.dtype], TOLERANCES[problem.dtype], ValidationResult()
    for i, S, p, x_dt, x64 in _checks(problem, lengths, seed, device):
        dy, dh_T = _cotangents(p, torch.Generator(device="cpu").manual_seed(seed * 1000 + 500 + i), device)
        y64, h64, g64 = _reference_grads(x64, clip, dy, dh_T, torch.float64)
        y_dt, h_dt, g_dt = _reference_grads(x_dt, clip, dy, dh_T, dtype)
        try:
            y, h_T, grads = train(x_dt, clip, dy.to(dtype), dh_T.float())
        except Exception as exc:
            result.error = f"training step failed at S={S}: {type(exc).__name__}: {exc}"
            result.error_kind = status.classify(exc)
            return result
        outs = [("y", y, y64, y_dt, True), ("h_T", h_T, h64, h_dt, False)]
        outs += [(f"d{n}", grads.get(n), g64[n], g_dt[n], None) for n in g64]
        for name, out, ref, low, time_dim in outs:
            if out is None:
                result.checks.append(OutputCheck(name, S, float("inf"), 0.0, 0.0, False))
                continue
            if time_dim is None:   # gradients: whole-tensor relative error
                e_ref = ((low.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()
                e = ((out.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()
            else:
                e_ref = relative_error(low, ref, p, time_dim)
                e = relative_error(out, ref, p, time_dim)
            finite = bool(torch.isfinite(out).all())
            result.checks.append(OutputCheck(name, S, e, e_ref, tol.limit(e_ref), finite))
    return result


def variant_training(fwd_module: ModuleType, fwd_config: KernelConfig,
                     bwd_module: ModuleType, bwd_config: KernelConfig) -> TrainFn:
    """A training step from two templates: the forward storing checkpoints every CKPT steps
    (the backward config's chunk), then the backward on them.

    y and h_T start as NaN and the backward poisons its own buffers, so any
    element either kernel leaves unwritten fails the check.
    """
    def run(x: Inputs, clip: Optional[float], dy: torch.Tensor, dh_T: torch.Tensor):
        p = problem_of(x)            # the per-length problem validate_training built x for
        lead = (1, p.tokens) if p.is_varlen else (p.B, p.S)
        y = torch.full((*lead, p.N, p.V), float("nan"), dtype=x.q.dtype, device=x.q.device)
        h_T = torch.full((p.B, p.N, p.K, p.V), float("nan"), dtype=torch.float32, device=x.q.device)
        ckpt = fwd_module.launch(p, fwd_config, x, y, h_T, ckpt_every=bwd_config["CKPT"])
        grads = bwd_module.launch_backward(p, bwd_config, x, ckpt, dy, dh_T,
                                           gradient_clipping=clip, poison=True)
        return y, h_T, grads
    return run


def _cotangents(p: Problem, g: torch.Generator, device):
    lead = (1, p.tokens) if p.is_varlen else (p.B, p.S)
    dy = torch.randn(*lead, p.N, p.V, generator=g, dtype=torch.float64)
    dh_T = torch.randn(p.B, p.N, p.K, p.V, generator=g, dtype=torch.float64)
    return dy.to(device), dh_T.to(device)
