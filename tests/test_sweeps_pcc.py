"""PCC cannot pass falsely: constants, NaN/Inf, empty tensors, dtypes; properties with hypothesis."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from sweeps.pcc import passes, pcc

finite_arrays = arrays(np.float64, st.integers(2, 64), elements=st.floats(-1e6, 1e6, allow_nan=False))


def test_constants():
    assert pcc(torch.full((4, 4), 3.0), torch.full((4, 4), 3.0)) == 1.0
    assert pcc(torch.zeros(8), torch.zeros(8)) == 1.0
    assert pcc(torch.full((8,), 3.0), torch.full((8,), 2.0)) == 0.0
    assert pcc(torch.full((8,), 3.0), torch.arange(8.0)) == 0.0
    assert pcc(torch.arange(8.0), torch.zeros(8)) == 0.0


def test_nan_and_inf():
    x = torch.tensor([1.0, 2.0, float("nan"), 4.0])
    assert pcc(x, x.clone()) == 1.0
    assert pcc(torch.tensor([1.0, 2.0, 3.0, 4.0]), x) == 0.0  # a NaN where the golden has none
    assert pcc(x, torch.tensor([1.0, 2.0, 3.0, 4.0])) == 0.0
    inf = torch.tensor([1.0, float("inf"), 3.0, 5.0])
    assert pcc(inf, inf.clone()) == 1.0
    assert pcc(inf, torch.tensor([1.0, float("-inf"), 3.0, 5.0])) == 0.0
    assert pcc(inf, torch.tensor([1.0, 2.0, 3.0, 5.0])) == 0.0
    assert pcc(torch.tensor([float("nan")] * 3), torch.tensor([float("nan")] * 3)) == 1.0


def test_empty_and_shapes():
    assert pcc(torch.empty(0, 4), torch.empty(0, 4)) == 1.0
    assert pcc(torch.empty(0, 4), torch.empty(4, 0)) == 0.0
    assert pcc(torch.arange(6.0), torch.arange(6.0).reshape(2, 3)) == 0.0


def test_dtypes():
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    assert pcc(x, x.to(torch.bfloat16)) > 0.999
    assert pcc(torch.arange(10, dtype=torch.int32), torch.arange(10, dtype=torch.int64)) == 1.0
    assert pcc(torch.arange(10, dtype=torch.uint8), torch.arange(10).flip(0).to(torch.uint8)) == -1.0
    assert pcc(torch.tensor([True, False, True]), torch.tensor([1, 0, 1])) == 1.0
    ok, value = passes(x, -x, 0.99)
    assert not ok and value == -1.0


@settings(max_examples=200, deadline=None)
@given(finite_arrays)
def test_self_correlation_is_one(a):
    assert pcc(a, a.copy()) == 1.0


@settings(max_examples=200, deadline=None)
@given(finite_arrays, st.floats(0.001, 1000), st.floats(-1000, 1000))
def test_affine_invariance(a, scale, shift):
    b = a * scale + shift
    if np.ptp(a) > 1e-3 * (1 + np.abs(a).max()):
        assert math.isclose(pcc(a, b), 1.0, abs_tol=1e-6)


@settings(max_examples=300, deadline=None)
@given(finite_arrays, finite_arrays)
def test_bounded_and_symmetric(a, b):
    if a.shape != b.shape:
        assert pcc(a, b) == 0.0
        return
    value = pcc(a, b)
    assert -1.0 <= value <= 1.0
    assert math.isclose(value, pcc(b, a), abs_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(finite_arrays, st.integers(0, 63))
def test_a_nan_never_passes(a, index):
    b = a.copy()
    b[index % a.size] = np.nan
    assert pcc(a, b) == 0.0
