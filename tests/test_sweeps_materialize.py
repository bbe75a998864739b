"""Preparation shared by both backends: argument values, input data, what set the threshold."""

from __future__ import annotations

import gc
import math
import weakref

import torch

from sweeps.catalogue import lookup
from sweeps.materialize import MEMO_MIN_ELEMENTS, prepare, substitute, to_ttnn_value
from sweeps.vector import make_vector


def _tensor(shape, dtype="BFLOAT16"):
    return {"tensor": {"shape": shape, "dtype": dtype, "layout": "TILE", "memory_config": None, "placement": None}}


def _vector(op, inputs, kwargs=None):
    return make_vector(op, "model_traced", "n150", [1, 1], inputs, kwargs or {}, 30.0)


def test_substituting_a_call_leaves_no_reference_cycle_holding_its_tensors():
    """An executor freed a vector's inputs only when the cyclic GC happened to run: a recursive
    closure in substitute() held them (gigabytes over a DeepSeek run)."""
    data = torch.zeros(4)
    alive = weakref.ref(data)
    vector = _vector("ttnn.concat", [[_tensor([4]), _tensor([4])]], {"dim": 0})
    enabled = gc.isenabled()
    gc.disable()
    try:
        args, kwargs = substitute(None, vector, {"0.0": data, "0.1": data}, None)
        assert args[0][0] is data and kwargs == {"dim": 0}
        del args, kwargs, data
        assert alive() is None  # freed by reference counting alone
    finally:
        if enabled:
            gc.enable()


def test_special_floats_travel_as_strings_and_reach_the_call_as_floats():
    assert to_ttnn_value(None, "-inf", None) == -math.inf and to_ttnn_value(None, "inf", None) == math.inf
    assert math.isnan(to_ttnn_value(None, "nan", None))
    assert to_ttnn_value(None, "ROW_MAJOR", None) == "ROW_MAJOR" and to_ttnn_value(None, [1, "-inf"], None)[1] < 0


def test_input_data_follows_what_the_tensor_is_and_large_inputs_are_shared():
    opdef = lookup("ttnn.add")
    big = _tensor([MEMO_MIN_ELEMENTS // 32, 32])
    first = prepare(None, opdef, _vector("ttnn.add", [big, big]))
    again = prepare(None, opdef, _vector("ttnn.add", [big, big], {"memory_config": None}))  # another vector
    assert first.originals["0"] is again.originals["0"]  # one cache-sized input made once per executor
    assert not torch.equal(first.originals["0"], first.originals["1"])  # slots differ: never add(x, x)
    assert first.rounded(None)["0"] is again.rounded(None)["0"]
    small = prepare(None, opdef, _vector("ttnn.add", [_tensor([2, 32]), _tensor([2, 32])]))
    remade = prepare(None, opdef, _vector("ttnn.add", [_tensor([2, 32]), _tensor([2, 32])]))
    assert torch.equal(small.originals["0"], remade.originals["0"])  # the same data, made again


def test_the_threshold_names_the_tensor_whose_dtype_set_it():
    opdef = lookup("ttnn.linear")
    vector = _vector("ttnn.linear", [_tensor([1, 1, 32, 64])], {"input_tensor_b": _tensor([1, 1, 64, 32], "BFLOAT8_B")})
    threshold, which = prepare(None, opdef, vector).threshold(opdef)
    assert (threshold, which) == (0.99, "input input_tensor_b BFLOAT8_B")
