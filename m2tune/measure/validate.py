"""How right is right: a candidate kernel against the float64 reference.

The recurrence amplifies rounding, so a fixed tolerance would either pass a broken bf16 kernel or
fail an honest one. Each output's error is compared with the error of a baseline reference: the
one that keeps its state in fp32 on the candidate's rounded inputs, its output rounded like the
candidate's (the state-precision contract; measure/tolerance.py holds the table and why).

err is the relative Frobenius error taken per sequence (batch element or packed sequence) and
maximised, so a fault confined to one sequence cannot hide in the norm of the others. Inputs are
fresh draws for every check, outputs are poisoned with NaN before each launch. What problems a
config is checked on (lengths, chunks, h0, clipping, packed sequences) is measure/plan.py's job.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable, Optional, Sequence, Union

import torch

from .. import status
from ..inputs import TORCH_DTYPES, Inputs, cast, make_inputs, problem_of
from ..kernel_variants.m2rnn.naive import m2rnn_reference
from ..problem import KernelConfig, Problem
from ..reuse import memoized
from ..variants import interpreting
from .tolerance import TOLERANCES, Tolerance, tolerance

__all__ = ["AUTO_CLIP", "TOLERANCES", "Tolerance", "OutputCheck", "ValidationResult", "relative_error",
           "default_lengths", "validate_forward", "validate_training", "variant_forward", "variant_training"]

AUTO_CLIP = "auto"        # validate_training(clip=AUTO_CLIP): a bound that binds on some steps


def where(case: str, S: int) -> str:
    """How checks and failures name the problem they ran on: `packed S=40`, or `S=40`."""
    return f"{case} S={S}" if case else f"S={S}"


@dataclass
class OutputCheck:
    name: str
    length: int
    e_cand: float
    e_ref: float
    limit: float
    finite: bool
    case: str = ""                 # the plan's case ("fixed", "packed", ...), if any

    @property
    def ok(self) -> bool:
        return self.finite and self.e_cand <= self.limit

    @property
    def where(self) -> str:
        return where(self.case, self.length)

    def describe(self) -> str:
        state = "ok" if self.ok else ("NaN/Inf left in output" if not self.finite else "too large")
        return (f"{self.name}@{self.where}: err {self.e_cand:.2e} vs limit {self.limit:.2e} "
                f"(baseline {self.e_ref:.2e}) {state}")


@dataclass
class ValidationResult:
    checks: list[OutputCheck] = field(default_factory=list)
    error: Optional[str] = None      # a launch that raised
    error_kind: Optional[str] = None  # its status category (m2tune.status)
    notes: list[str] = field(default_factory=list)   # what was checked how (clip bounds, precision class)

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


# A forward candidate: writes y and h_T (both pre-poisoned) for the inputs; called with
# ckpt_every=c (a keyword, only when c > 0) it also returns the checkpoints a backward reads.
ForwardFn = Callable[..., Optional[torch.Tensor]]


def variant_forward(module: ModuleType, config: KernelConfig) -> ForwardFn:
    def run(problem: Problem, x: Inputs, y: torch.Tensor, h_T: torch.Tensor, *, ckpt_every: int = 0):
        return module.launch(problem, config, x, y, h_T, ckpt_every=ckpt_every)
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


class _Judge:
    """Compares each output with float64 and with the baseline of the config's precision class."""

    def __init__(self, problem: Problem, rounding: Optional[str], case: str, result: "ValidationResult"):
        self.kind, self.tol = tolerance(problem.dtype, rounding)
        # the baseline's state: fp32 by the contract; the problem's dtype for declared rounding
        self.state = TORCH_DTYPES[problem.dtype] if rounding else torch.float32
        self.case, self.result = case, result
        note = (f"{self.kind} ({rounding})" if rounding else self.kind) + f": {self.tol.why}"
        if note not in result.notes:
            result.notes.append(note)

    def add(self, name: str, S: int, p: Problem, out: Optional[torch.Tensor], ref: torch.Tensor,
            base: torch.Tensor, time_dim: Optional[bool]) -> None:
        if out is None:
            self.result.checks.append(OutputCheck(name, S, float("inf"), 0.0, 0.0, False, self.case))
            return
        base = rounded_like(base, out)
        if time_dim is None:                       # gradients and checkpoints: the whole tensor
            e_ref = ((base.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()
            e = ((out.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()
        else:
            e_ref = relative_error(base, ref, p, time_dim)
            e = relative_error(out, ref, p, time_dim)
        finite = bool(torch.isfinite(out).all())
        limit = self.tol.limit(e_ref, fp32_output=out.dtype == torch.float32)
        self.result.checks.append(OutputCheck(name, S, e, e_ref, limit, finite, self.case))


def rounded_like(base: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """`base` rounded to the dtype of the candidate's output as the platform that made it rounds.
    A GPU rounds to nearest; Triton 3.6's interpreter (measured with bench/tolerance_table.py in
    the interpreter; that run is not committed) truncates every fp32 -> bf16 conversion, whatever
    fp_downcast_rounding says, so its honest bf16 outputs sit twice as far from float64 as
    round-to-nearest ones."""
    if out.dtype == torch.bfloat16 and out.device.type == "cpu" and interpreting():
        bits = base.float().contiguous().view(torch.int32) & -65536        # drop the low 16 bits
        return bits.view(torch.float32).to(torch.bfloat16)                 # exact: nothing to round
    return base.to(out.dtype)


def _chunk_states(p: Problem, x: Inputs, dtype: torch.dtype, every: int):
    """(states, observe): a zeroed (num_seqs, N, chunks, K, V) tensor that `observe`, passed to the
    reference run on x, fills with the state at the start of every chunk of `every` steps that
    starts inside its sequence (others stay zero: the kernel leaves them unwritten, and a chunk
    starting exactly at a packed sequence's end is one of them; they are masked out)."""
    out = torch.zeros(p.B, p.N, -(-p.S // every), p.K, p.V, dtype=dtype, device=x.q.device)
    if x.h0 is not None:
        out[:, :, 0] = x.h0.to(dtype)

    def observe(seq, t, h):
        length = p.S if seq is None else p.seqlens[seq]          # t counts within the sequence
        if (t + 1) % every == 0 and t + 1 < length:
            rows = slice(None) if seq is None else slice(seq, seq + 1)
            out[rows, :, (t + 1) // every] = h
    return out, observe


def _chunk_mask(p: Problem, every: int, device) -> torch.Tensor:
    """(num_seqs, 1, chunks, 1, 1): True where the chunk starts inside its sequence."""
    lens = torch.tensor(p.seqlens if p.is_varlen else [p.S] * p.B, device=device)
    starts = torch.arange(-(-p.S // every), device=device) * every
    return (starts[None, :] < lens[:, None])[:, None, :, None, None]


def validate_forward(problem: Problem, forward: ForwardFn, *, seed: int,
                     device: str | torch.device = "cpu", lengths: Optional[Sequence[int]] = None,
                     rounding: Optional[str] = None, ckpt_every: int = 0, case: str = "",
                     result: Optional["ValidationResult"] = None) -> ValidationResult:
    """Check a forward candidate (y, h_T, and with ckpt_every its checkpoints) at each length on
    fresh inputs; never raises for a bad kernel. rounding: the config's declared state rounding."""
    dtype, result = TORCH_DTYPES[problem.dtype], result if result is not None else ValidationResult()
    judge = _Judge(problem, rounding, case, result)
    for i, S, p, x_dt, x64 in _checks(problem, lengths, seed, device):
        y64, h64, ck64, y_b, h_b, ck_b = memoized(
            ("forward-references", p, seed * 1000 + i, str(x_dt.q.device), judge.state, ckpt_every),
            lambda: _forward_references(p, x_dt, x64, judge.state, ckpt_every))
        y = torch.full(y64.shape, float("nan"), dtype=dtype, device=device)
        h_T = torch.full(h64.shape, float("nan"), dtype=torch.float32, device=device)
        try:
            ckpt = forward(p, x_dt, y, h_T, ckpt_every=ckpt_every) if ckpt_every else forward(p, x_dt, y, h_T)
            if y.is_cuda:
                torch.cuda.synchronize(y.device)
        except Exception as exc:  # a candidate that raises is a failed candidate, not a crash
            result.error = f"launch failed at {where(case, S)}: {type(exc).__name__}: {exc}"
            result.error_kind = status.classify(exc)
            return result
        judge.add("y", S, p, y, y64, y_b, True)
        judge.add("h_T", S, p, h_T, h64, h_b, False)
        if ckpt_every:
            mask = _chunk_mask(p, ckpt_every, device)
            out = None if ckpt is None else torch.where(mask, ckpt, torch.zeros((), dtype=ckpt.dtype, device=device))
            judge.add("ckpt", S, p, out, ck64, ck_b, None)
    return result


def _forward_references(p: Problem, x_dt: Inputs, x64: Inputs, state: torch.dtype, ckpt_every: int):
    """(y, h_T, checkpoints) in float64 and of the baseline keeping its state in `state`; the
    checkpoints (None without ckpt_every) come from the same runs, observed per step."""
    ck64, see64 = _chunk_states(p, x64, torch.float64, ckpt_every) if ckpt_every else (None, None)
    ck_b, see_b = _chunk_states(p, x_dt, state, ckpt_every) if ckpt_every else (None, None)
    with torch.no_grad():
        y64, h64 = m2rnn_reference(*_args(x64), cu_seqlens=x64.cu_seqlens, observe=see64)
        y_b, h_b = m2rnn_reference(*_args(x_dt), cu_seqlens=x_dt.cu_seqlens, dtype=state, observe=see_b)
    return y64, h64, ck64, y_b, h_b, ck_b


def _args(x: Inputs):
    return x.q, x.k, x.v, x.W, x.f, x.h0


# A training candidate: (inputs in dtype, clip, dy, dh_T) -> (y, h_T, {name: grad}).
TrainFn = Callable[[Inputs, Optional[float], torch.Tensor, torch.Tensor],
                   tuple[torch.Tensor, torch.Tensor, dict]]
GRAD_NAMES = ("q", "k", "v", "W", "f", "h0")


def _reference_grads(x: Inputs, clip, dy, dh_T, dtype, observe=None):
    leaves = {n: getattr(x, n).detach().to(dtype).requires_grad_(True)
              for n in GRAD_NAMES if getattr(x, n) is not None}
    y, h = m2rnn_reference(*(leaves.get(n) for n in GRAD_NAMES), cu_seqlens=x.cu_seqlens,
                           gradient_clipping=clip, observe=observe)
    grads = torch.autograd.grad((y, h), list(leaves.values()), (dy.to(y.dtype), dh_T.to(h.dtype)))
    return y.detach(), h.detach(), dict(zip(leaves, grads))


def _state_grads(x64: Inputs, clip, dy, dh_T) -> torch.Tensor:
    """|dL/dH_t| of every state element of every step, before its clamp (float64 reference)."""
    seen: list[torch.Tensor] = []

    def observe(seq, t, h):
        if h.requires_grad:
            h.register_hook(lambda g: seen.append(g.detach().abs().flatten()))
    _reference_grads(x64, clip, dy, dh_T, torch.float64, observe)
    return torch.cat(seen)


def auto_clip(x64: Inputs, dy: torch.Tensor, dh_T: torch.Tensor, *, quantile: float = 0.75) -> tuple[float, float]:
    """A gradient-clipping bound that binds: the `quantile` of the unclamped state gradients'
    magnitudes, and the share of (clamped-run) state-gradient elements it then clamps."""
    grads = _state_grads(x64, None, dy, dh_T)
    bound = float(torch.quantile(grads[: 2 ** 24].float(), quantile))
    binding = float((_state_grads(x64, bound, dy, dh_T) > bound).double().mean())
    return bound, binding


def validate_training(problem: Problem, train: TrainFn, *, seed: int, device: str | torch.device = "cpu",
                      clip: Union[None, float, str] = None, lengths: Optional[Sequence[int]] = None,
                      rounding: Optional[str] = None, case: str = "",
                      result: Optional["ValidationResult"] = None) -> ValidationResult:
    """Forward outputs and every input gradient against float64 autograd, at each length.

    dy and dh_T are fresh random draws; gradients are compared as whole tensors (relative
    Frobenius). clip=AUTO_CLIP: a bound derived per draw that clamps some state gradients
    (auto_clip), noted in the result.
    """
    result = result if result is not None else ValidationResult()
    judge = _Judge(problem, rounding, case, result)
    for i, S, p, x_dt, x64 in _checks(problem, lengths, seed, device):
        refs = memoized(("training-references", p, seed * 1000 + i, str(x_dt.q.device), judge.state, clip),
                        lambda: _training_references(p, x_dt, x64, judge.state, clip, seed * 1000 + 500 + i))
        dy, dh_T, bound, binding, (y64, h64, g64), (y_b, h_b, g_b) = refs
        if clip == AUTO_CLIP:
            result.notes.append(f"{where(case, S)}: gradient_clipping={bound:.3g} "
                                f"clamps {binding:.0%} of the state-gradient elements")
        try:
            y, h_T, grads = train(x_dt, bound, dy.to(x_dt.q.dtype), dh_T.float())
        except Exception as exc:
            result.error = f"training step failed at {where(case, S)}: {type(exc).__name__}: {exc}"
            result.error_kind = status.classify(exc)
            return result
        judge.add("y", S, p, y, y64, y_b, True)
        judge.add("h_T", S, p, h_T, h64, h_b, False)
        for n in g64:
            judge.add(f"d{n}", S, p, grads.get(n), g64[n], g_b[n], None)
    return result


def _training_references(p: Problem, x_dt: Inputs, x64: Inputs, state: torch.dtype,
                         clip: Union[None, float, str], seed: int):
    """(dy, dh_T, bound, binding, float64 (y, h_T, grads), baseline (y, h_T, grads)): fresh
    cotangents from `seed`, the clipping bound (AUTO_CLIP: derived from them, with the share it
    clamps; else clip and None) and both references' outputs and input gradients."""
    dy, dh_T = _cotangents(p, torch.Generator(device="cpu").manual_seed(seed), x_dt.q.device)
    # the cotangents as the candidate gets them (dy in the I/O dtype), for the references too
    dy, dh_T = dy.to(x_dt.q.dtype).double(), dh_T.float().double()
    bound, binding = auto_clip(x64, dy, dh_T) if clip == AUTO_CLIP else (clip, None)
    return (dy, dh_T, bound, binding, _reference_grads(x64, bound, dy, dh_T, torch.float64),
            _reference_grads(x_dt, bound, dy, dh_T, state))


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
