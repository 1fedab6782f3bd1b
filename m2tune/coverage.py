"""Which call paths a tuned entry was proven right on, and which paths a call takes.

A tuned config is used for every call whose problem buckets near its own: with an initial state,
packed sequences, gradient clipping, over many checkpoint chunks. Each path is code of its own in
the kernels, so an entry is used for a call only if its validation covered every path the call
takes (measure/plan.py validates them; the entry's `validated` record says which it covered).

Entries from before the validation plan (no `validated` record) are credited with what their
validation did run: a GPU-measured backward was checked at 512 steps (several chunks), nothing
else; a model-backend entry at 16 steps (one chunk), nothing else.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from .problem import Problem

PATHS = ("chunks", "h0", "clip", "packed")
PLAN_VERSION = 2          # the first validation plan that records its coverage (measure/plan.py)


def needed(role: str, problem: Problem, *, training: bool, clipping: bool) -> tuple[str, ...]:
    """The paths a call takes: chunks for a backward and for a forward writing checkpoints."""
    need = set()
    if role == "backward" or training:
        need.add("chunks")
    if problem.h0:
        need.add("h0")
    if problem.is_varlen:
        need.add("packed")
    if role == "backward" and clipping:
        need.add("clip")
    return tuple(p for p in PATHS if p in need)


def covered(validated: Optional[Mapping[str, Any]], *, role: str, measured: bool) -> tuple[str, ...]:
    """The paths an entry's validation covered (its `validated` record, or the legacy credit)."""
    if isinstance(validated, Mapping) and isinstance(validated.get("plan"), int):
        if validated.get("failed"):
            return ()
        return tuple(p for p in PATHS if p in (validated.get("paths") or ()))
    return ("chunks",) if role == "backward" and measured else ()


def failure(validated: Optional[Mapping[str, Any]]) -> Optional[str]:
    """Why the entry's last validation rejected it (m2tune check --revalidate), if it did."""
    if isinstance(validated, Mapping) and validated.get("failed"):
        return str(validated["failed"])
    return None


def missing(validated: Optional[Mapping[str, Any]], *, role: str, measured: bool, need: tuple[str, ...]) -> list[str]:
    have = set(covered(validated, role=role, measured=measured))
    return [p for p in need if p not in have]
