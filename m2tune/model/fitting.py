"""Small numeric helpers for fitting and judging the performance model (numpy only)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def nnls(A: np.ndarray, b: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """min ||A x - b|| subject to x >= 0 (Lawson and Hanson's active-set method).

    Step-time constants are costs: a negative one would let the model trade one term
    against another and extrapolate badly, so the fit keeps them non-negative.
    Columns are scaled to unit norm first; the result is in the original units.
    """
    A = np.asarray(A, dtype=float)
    b = np.asarray(b, dtype=float)
    norms = np.linalg.norm(A, axis=0)
    norms[norms == 0] = 1.0
    As = A / norms
    n = As.shape[1]
    passive = np.zeros(n, dtype=bool)
    x = np.zeros(n)
    for _ in range(3 * n + 10):
        grad = As.T @ (b - As @ x)
        if passive.all() or grad[~passive].max() <= tol:
            break
        passive[np.argmax(np.where(passive, -np.inf, grad))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(As[:, passive], b, rcond=None)[0]
            if (z[passive] > tol).all():
                break
            shrink = passive & (z <= tol)
            alpha = np.min(x[shrink] / (x[shrink] - z[shrink]))
            x = x + alpha * (z - x)
            passive &= x > tol
        x = z
    return x / norms


def ranks(values: Sequence[float]) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 1-based."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="mergesort")
    r = np.empty(len(v))
    r[order] = np.arange(1, len(v) + 1)
    for value in np.unique(v):
        tied = v == value
        if tied.sum() > 1:
            r[tied] = r[tied].mean()
    return r


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation: Pearson correlation of the ranks."""
    if len(a) != len(b) or len(a) < 3:
        raise ValueError(f"spearman needs two equally long samples of at least 3, got {len(a)} and {len(b)}")
    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def median_ape(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Median absolute percentage error of predicted against measured."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    return float(np.median(np.abs(p - m) / m) * 100)
