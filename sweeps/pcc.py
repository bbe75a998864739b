"""PCC: the comparison every verdict rests on, written so that it cannot pass falsely.

pcc(golden, actual), both converted to float64:
1. shapes differ -> 0.0 (a wrong shape never passes);
2. both empty -> 1.0;
3. NaN must sit exactly where the golden has NaN, and +/-Inf exactly where the golden has the
   same infinity; any difference -> 0.0;
4. on the remaining finite elements: identical -> 1.0; if either side is constant (zero variance)
   -> 1.0 only when both are the same constant (within 1e-6 relative), else 0.0 — a constant
   never correlates with a varying tensor, and two different constants do not agree;
5. otherwise Pearson's r = sum(da*db) / sqrt(sum(da^2) * sum(db^2)) with da, db the deviations
   from the means, clamped to [-1, 1].
A verdict passes when pcc >= threshold.
"""

from __future__ import annotations

import math

import numpy as np


def _as_float64(value) -> np.ndarray:
    if hasattr(value, "detach"):  # torch: bf16 and unsigned types have no numpy view, widen first
        import torch

        value = value.detach().cpu()
        value = value.to(torch.float64) if value.is_floating_point() else value.to(torch.int64)
        value = value.numpy()
    return np.asarray(value).astype(np.float64, copy=False)


def pcc(golden, actual) -> float:
    a = _as_float64(golden)
    b = _as_float64(actual)
    if a.shape != b.shape:
        return 0.0
    if a.size == 0:
        return 1.0
    a, b = a.ravel(), b.ravel()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):  # the NaN/Inf rules; most outputs skip them
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        if not np.array_equal(nan_a, nan_b):
            return 0.0
        inf_a, inf_b = np.isinf(a), np.isinf(b)
        if not np.array_equal(inf_a, inf_b) or not np.array_equal(a[inf_a], b[inf_b]):
            return 0.0
        finite = ~(nan_a | inf_a)
        a, b = a[finite], b[finite]
    if a.size == 0 or np.array_equal(a, b):
        return 1.0
    const_a, const_b = bool((a == a[0]).all()), bool((b == b[0]).all())
    if const_a or const_b:
        same = const_a and const_b and math.isclose(float(a[0]), float(b[0]), rel_tol=1e-6, abs_tol=1e-12)
        return 1.0 if same else 0.0
    da, db = a - a.mean(), b - b.mean()
    r = _correlation(da, db)
    if r is None:  # sums of squares outside the normal range: scale out of it (r is scale-invariant)
        da /= np.abs(da).max() or 1.0
        db /= np.abs(db).max() or 1.0
        r = _correlation(da, db)
    return 0.0 if r is None else max(-1.0, min(1.0, r))


_NORMAL = (1e-150, 1e150)  # sums of squares whose product stays inside float64's normal range


def _correlation(da: np.ndarray, db: np.ndarray) -> float | None:
    """r of deviations, or None when a sum of squares is zero, tiny or huge (their product would leave
    float64's normal range)."""
    saa, sbb = float(np.dot(da, da)), float(np.dot(db, db))
    if not (_NORMAL[0] < saa < _NORMAL[1] and _NORMAL[0] < sbb < _NORMAL[1]):
        return None
    return float(np.dot(da, db)) / math.sqrt(saa * sbb)


def passes(golden, actual, threshold: float) -> tuple[bool, float]:
    value = pcc(golden, actual)
    return value >= threshold, value
