"""What a config is proven right on before it is scored or shipped: one plan for every backend.

The runtime uses a tuned config for every call whose problem buckets near the tuned one: with h0,
with gradient clipping, on packed sequences, over many checkpoint chunks. So a candidate is
validated on small problems derived from the target that keep its K, V, dtype and head sharing and
cover each of those paths:

    fixed    h0 on, no clipping, B sequences of 2.5 chunks + 3 steps (three chunks, the last
             partial); on the GPU also a second length of at least 512 steps, where rounding
             compounds. A forward that can make checkpoints also has them compared, chunk by chunk.
    clip     (backward) h0 on, a clipping bound derived from the inputs that binds on some steps
             (validate.auto_clip), one chunk and a partial one.
    packed   h0 on, clipping (backward), sequences of unequal lengths packed into one row: one
             shorter than a chunk, one a chunk and a partial one, on the GPU one of 300+ steps,
             and more to fill a BLOCK_B > 2 program.

The chunk is the backward config's CKPT; for a forward, the smallest CKPT a backward asks of it
(its checkpoints then come most often). In the Triton interpreter heads are cut to 2 (sharing
kept) and the clip case is folded into the packed one: the interpreter runs about 0.3 s per
sequence-step of a K=64 training step, so every case there is paid for in minutes.

Each plan has a version; tuned entries record it and the paths it covered (`validated`), and the
runtime does not use an entry for a call on a path its validation did not cover.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from .. import variants
from ..coverage import PATHS, PLAN_VERSION
from ..problem import KernelConfig, Problem

INTERPRETER_HEADS = 2
# The interpreter's time grows with the steps a plan walks (about 0.3 s per sequence-step of a K=64
# training step): a trial's time limit grows with them past this many, so a candidate with long
# checkpoint chunks is not scored as hanging.
STEPS_PER_TIMEOUT = 400
GPU_LONG = 512               # steps: where bf16 I/O with an fp32 state shows compounding (tolerance.py)
GPU_PACKED_LONG = 300


@dataclass(frozen=True)
class Case:
    name: str
    problem: Problem                 # the case's problem (packed: its seqlens), h0 on
    lengths: tuple[int, ...]         # fixed-length runs; a packed case runs its own seqlens once
    clip: bool                       # derive a binding clipping bound (training only)
    ckpt_every: int = 0              # forward: also check checkpoints every this many steps
    covers: tuple[str, ...] = ()

    def describe(self) -> str:
        shape = (f"packed {list(self.problem.seqlens)}" if self.problem.is_varlen
                 else f"B={self.problem.B} S={','.join(map(str, self.lengths))}")
        extra = (" clip" if self.clip else "") + (f" ckpt/{self.ckpt_every}" if self.ckpt_every else "")
        return f"{self.name}: {shape} N={self.problem.N} h0{extra}"


@dataclass(frozen=True)
class Plan:
    version: int
    kernel: str
    where: str                       # "gpu" or "interpreter"
    chunk: int
    training: bool                   # a backward: every case is a training step
    cases: tuple[Case, ...]

    @property
    def covers(self) -> tuple[str, ...]:
        found = {p for c in self.cases for p in c.covers}
        return tuple(p for p in PATHS if p in found)

    @property
    def sequence_steps(self) -> int:
        """Steps summed over the plan's sequences: what an interpreter run costs, roughly."""
        return sum(sum(c.problem.seqlens) if c.problem.is_varlen else c.problem.B * sum(c.lengths)
                   for c in self.cases)

    def time_limit(self, base_s: float) -> float:
        """A trial's time limit for this plan: `base_s`, grown with the steps past STEPS_PER_TIMEOUT."""
        return base_s * max(1.0, self.sequence_steps / STEPS_PER_TIMEOUT)

    def record(self) -> dict[str, Any]:
        """What a trial and a tuned entry keep: enough for the runtime to decide what it covers."""
        return {"plan": self.version, "where": self.where, "chunk": self.chunk, "paths": list(self.covers),
                "cases": [c.describe() for c in self.cases]}


def reduced_heads(problem: Problem, n: int) -> dict[str, int]:
    """Head counts for at most n heads with the same sharing: a count equal to 1 stays 1, one equal
    to N becomes n, a group size that divides n is kept, else 1."""
    n = min(problem.N, n)
    heads = {}
    for name in ("Nq", "Nk", "Nv", "Nw", "Nf"):
        count = getattr(problem, name)
        if count == problem.N:
            heads[name] = n
        else:
            group = problem.N // count
            heads[name] = max(1, n // group) if n % group == 0 or group > n else 1
    return heads


def chunk_of(kernel: str, config: KernelConfig) -> int:
    return variants.spec(kernel).validation_chunk(config)


def _packed_lengths(chunk: int, long: Optional[int], sequences: int) -> list[int]:
    lens = [chunk // 2 + 1, chunk + 5] + ([long] if long else [])
    i = 0
    while len(lens) < sequences:             # fill a BLOCK_B program with more unequal lengths
        n = max(1, (chunk * (i + 2)) // 8 + i + 2)
        if n not in lens:
            lens.append(n)
        i += 1
    return lens


def plan_for(kernel: str, target: Problem, config: KernelConfig, *, interpreter: bool) -> Plan:
    """The validation plan of `config` for calls near `target`."""
    spec = variants.spec(kernel)
    training = spec.role == "backward"
    chunk = chunk_of(kernel, config)
    heads = reduced_heads(target, INTERPRETER_HEADS) if interpreter else {
        n: getattr(target, n) for n in ("Nq", "Nk", "Nv", "Nw", "Nf")}
    block_b = int(config.get("BLOCK_B", 1))
    dims = dict(K=target.K, V=target.V, dtype=target.dtype, h0=True, **heads)
    three = math.ceil(2.5 * chunk) + 3
    B = min(max(target.B, 1), max(2, block_b)) if interpreter else min(target.B, 8)
    fixed_lengths = (three,) if interpreter else (three, max(GPU_LONG, 4 * chunk + 7))
    ckpt = chunk if not training and spec.training_reason(config) is None else 0
    cases = [Case("fixed", Problem(B=B, S=max(fixed_lengths), **dims), fixed_lengths, clip=False,
                  ckpt_every=ckpt, covers=("chunks", "h0"))]
    if training and not interpreter:
        cases.append(Case("clip", Problem(B=B, S=chunk + 5, **dims), (chunk + 5,), clip=True,
                          covers=("clip", "h0")))
    lens = _packed_lengths(chunk, None if interpreter else max(GPU_PACKED_LONG, three), max(2, block_b))
    packed = Problem.varlen(lens, **dims)
    cases.append(Case("packed", packed, (packed.S,), clip=training, ckpt_every=ckpt,
                      covers=("packed", "h0") + (("clip",) if training else ())))
    return Plan(PLAN_VERSION, kernel, "interpreter" if interpreter else "gpu", chunk, training, tuple(cases))


def unfit_reason(plan: Plan, config: KernelConfig) -> Optional[str]:
    """Why the config cannot run one of the plan's problems (the spec's check), else None."""
    spec = variants.spec(plan.kernel)
    for case in plan.cases:
        why = spec.check(case.problem, config, interpreter=plan.where == "interpreter")
        if why:
            return f"validation case {case.describe()}: {why}"
    return None


def run(plan: Plan, config: KernelConfig, candidate: Any, *, seed: int, device: Any = "cpu"):
    """Validate `candidate` (a validate.ForwardFn, or a TrainFn for a backward plan) on every case;
    one ValidationResult, each check named by its case; stops at the first case that raises."""
    from . import validate
    rounding = variants.spec(plan.kernel).rounding(config)
    result = validate.ValidationResult()
    result.notes.append(f"plan v{plan.version} ({plan.where}): " + "; ".join(c.describe() for c in plan.cases))
    if rounding:
        result.notes.append(f"rounded-products config ({rounding}): held to the bf16-state baseline")
    for i, case in enumerate(plan.cases):
        kw = dict(seed=seed * 10 + i, device=device, lengths=case.lengths, rounding=rounding,
                  case=case.name, result=result)
        if plan.training:
            validate.validate_training(case.problem, candidate,
                                       clip=validate.AUTO_CLIP if case.clip else None, **kw)
        else:
            validate.validate_forward(case.problem, candidate, ckpt_every=case.ckpt_every, **kw)
        if result.error:
            break
    return result
