"""The gradient buffers a backward launcher hands its kernel, and the gradients it returns.

Shared heads (several heads reading one head of q, k, v or f) and a K split across programs make
several programs add into one gradient element. Per gradient the kernel's spec plans (copies R,
atomics?): head n adds into copy (n % g) % R of a (R, tokens, heads, ...) fp32 buffer, g the heads
sharing one input head; atomics where one copy still has several writers, plain stores where a
program is the only writer, and the input dtype directly when R == 1 and no atomics are needed.
dW is one [V, V] partial per program. finish() sums the copies and partials (torch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from m2tune.inputs import Inputs
from m2tune.problem import KernelConfig, Problem


@dataclass
class GradientBuffers:
    problem: Problem
    x: Inputs
    plan: dict[str, tuple[int, bool]]     # "q", "k", "v", "f" -> (copies, atomics needed)
    bufs: dict[str, torch.Tensor]         # the same keys -> (copies, *input shape) buffers
    dw_part: torch.Tensor                 # (N, batch blocks, K blocks, V, V) fp32
    dh0: Optional[torch.Tensor]

    def finish(self) -> dict[str, torch.Tensor]:
        """Gradients {"q", "k", "v", "W", "f"(, "h0")} in the inputs' dtypes and shapes."""
        p, dt = self.problem, self.x.q.dtype
        grads = {name: (buf.sum(0) if buf.shape[0] > 1 else buf[0]).to(dt) for name, buf in self.bufs.items()}
        grads["W"] = self.dw_part.sum((1, 2)).view(p.Nw, p.N // p.Nw, p.V, p.V).sum(1).to(self.x.W.dtype)
        if self.dh0 is not None:
            grads["h0"] = self.dh0
        return grads


def backward_buffers(spec: Any, problem: Problem, config: KernelConfig, x: Inputs, ckpt: torch.Tensor,
                     *, poison: bool) -> GradientBuffers:
    """Check the checkpoints and allocate every gradient buffer of one backward launch.

    poison: fill every buffer the kernel must overwrite completely with NaN instead of leaving it
    uninitialised (validation), so an unwritten element fails the check.
    """
    ck = config["CKPT"]
    want = (problem.B, problem.N, -(-problem.S // ck), problem.K, problem.V)
    if tuple(ckpt.shape) != want or ckpt.dtype != torch.float32:
        raise ValueError(f"{spec.name}: ckpt expected fp32 {want} (forward launched with "
                         f"ckpt_every={ck}), got {ckpt.dtype} {tuple(ckpt.shape)}")
    dev, dt = x.q.device, x.q.dtype

    def fresh(shape, dtype):
        if poison:
            return torch.full(shape, float("nan"), dtype=dtype, device=dev)
        return torch.empty(shape, dtype=dtype, device=dev)

    plan = spec.plan(problem, config)
    lead = x.q.shape[:2]                        # (B, S) or (1, T)
    shapes = {"q": (*lead, problem.Nq, problem.K), "k": (*lead, problem.Nk, problem.K),
              "v": (*lead, problem.Nv, problem.V), "f": (*lead, problem.Nf)}
    bufs = {}
    for name, (copies, atomic) in plan.items():
        if atomic:
            bufs[name] = torch.zeros((copies, *shapes[name]), dtype=torch.float32, device=dev)
        elif copies > 1:
            bufs[name] = fresh((copies, *shapes[name]), torch.float32)
        else:                                   # sole writer of every element: final dtype
            bufs[name] = fresh((1, *shapes[name]), dt)
    grid = spec.layout(problem, config).grid
    dw_part = fresh((problem.N, grid[1], grid[0], problem.V, problem.V), torch.float32)
    dh0 = fresh(x.h0.shape, x.h0.dtype) if x.h0 is not None else None
    return GradientBuffers(problem, x, plan, bufs, dw_part, dh0)
