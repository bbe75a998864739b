"""The `nightly` suite: hand-written grids per op, for coverage the traced models do not give.

A grid is shapes x dtypes x memory configs on a list of machines; the op's family decides how a
point becomes arguments (one tensor, two tensors, a matmul pair, a tensor and a dtype...).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from sweeps.profiles import get_profile
from sweeps.vector import Encoded, make_vector

DRAM = {"memory_layout": "INTERLEAVED", "buffer_type": "DRAM", "shard_spec": None}
L1 = {"memory_layout": "INTERLEAVED", "buffer_type": "L1", "shard_spec": None}
_SHAPES = ([1, 1, 32, 32], [1, 1, 64, 128], [1, 1, 256, 512], [2, 4, 32, 1024])
_DTYPES = ("BFLOAT16", "BFLOAT8_B", "FLOAT32")


def tensor(shape: list[int], dtype: str, memory: dict[str, Any], layout: str = "TILE") -> dict[str, Any]:
    return {
        "tensor": {
            "shape": list(shape),
            "dtype": dtype,
            "layout": layout,
            "memory_config": memory,
            "placement": None,
            "storage": "DEVICE",
        }
    }


def _one(shape, dtype, memory):
    return [tensor(shape, dtype, memory)], {"memory_config": {"memory_config": memory}}


def _two(shape, dtype, memory):
    return [tensor(shape, dtype, memory), tensor(shape, dtype, memory)], {"memory_config": {"memory_config": memory}}


def _matmul(shape, dtype, memory):
    *batch, m, k = shape
    weight = [1, 1, k, 256]
    return [tensor(shape, "BFLOAT16", memory), tensor(weight, dtype, DRAM)], {
        "memory_config": {"memory_config": memory}
    }


def _softmax(shape, dtype, memory):
    return [tensor(shape, dtype, memory)], {"dim": -1, "memory_config": {"memory_config": memory}}


def _typecast(shape, dtype, memory):
    return [tensor(shape, "BFLOAT16", memory), {"enum": "DataType", "value": dtype}], {}


Build = Callable[[list[int], str, dict[str, Any]], tuple[list[Any], dict[str, Any]]]

GRIDS: dict[str, tuple[Build, tuple[str, ...]]] = {
    "ttnn.add": (_two, ("n150", "n300", "p150")),
    "ttnn.multiply": (_two, ("n150", "n300", "p150")),
    "ttnn.relu": (_one, ("n150", "n300")),
    "ttnn.silu": (_one, ("n150", "n300")),
    "ttnn.exp": (_one, ("n150", "n300")),
    "ttnn.matmul": (_matmul, ("n150", "n300", "p150")),
    "ttnn.softmax": (_softmax, ("n150", "n300")),
    "ttnn.typecast": (_typecast, ("n150", "n300")),
}


def nightly(selection) -> Any:
    from sweeps.catalogue import timeout_for
    from sweeps.suites import Expansion

    expansion = Expansion()
    ops = selection.ops if selection.ops is not None else sorted(GRIDS)
    for op in ops:
        if op not in GRIDS:
            continue
        build, machines = GRIDS[op]
        for machine in [selection.machine] if selection.machine else machines:
            profile = get_profile(machine)
            for shape, dtype, memory in itertools.product(_SHAPES, _DTYPES, (DRAM, L1)):
                args, kwargs = build(shape, dtype, memory)
                vector = make_vector(
                    op, "nightly", profile.name, list(profile.mesh_shape), args, kwargs, timeout_for(op, profile)
                )
                expansion.add(Encoded.of(vector, expansion.tensors), None)
    return expansion
