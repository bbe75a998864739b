"""Synthetic master stores of any size, in tt-metal's current dialect (for tests and benchmarks)."""

from __future__ import annotations

import random
from typing import Any

from tracer.confighash import config_hash

_DTYPES = ["DataType.BFLOAT16", "DataType.BFLOAT8_B", "DataType.FLOAT32", "DataType.BFLOAT4_B"]
_OPS = ["ttnn.add", "ttnn.multiply", "ttnn.matmul", "ttnn.pad", "ttnn.softmax", "ttnn.typecast", "ttnn.relu"]
_MACHINE = {
    "board_type": "Wormhole",
    "device_series": "n300",
    "card_count": 1,
    "device_count": 2,
    "mesh_device_shape": [1, 2],
}


def tensor(shape: list[int], dtype: str, sharded: bool) -> dict[str, Any]:
    shard = "None"
    layout = "TensorMemoryLayout.INTERLEAVED"
    if sharded:
        layout = "TensorMemoryLayout.HEIGHT_SHARDED"
        shard = {
            "grid": [{"start": {"x": 0, "y": 0}, "end": {"x": 7, "y": 3}}],
            "shape": [32, shape[-1]],
            "orientation": "ROW_MAJOR",
        }
    return {
        "type": "ttnn.Tensor",
        "original_shape": shape,
        "original_dtype": dtype,
        "layout": "Layout.TILE",
        "storage_type": "StorageType.DEVICE",
        "memory_config": {
            "memory_layout": layout,
            "buffer_type": "BufferType.L1" if sharded else "BufferType.DRAM",
            "shard_spec": shard,
            "is_sharded": sharded,
            "interleaved": not sharded,
        },
        "tensor_placement": {
            "placement": "['PlacementReplicate']",
            "distribution_shape": "[2]",
            "mesh_device_shape": "[1, 2]",
        },
    }


def synthetic_store(n: int, seed: int = 0, trace_uid: str = "synthetic") -> dict[str, Any]:
    """n distinct configs spread over a few ops, each with a valid config_hash."""
    rng = random.Random(seed)
    operations: dict[str, Any] = {op: {"configurations": []} for op in _OPS}
    for i in range(n):
        op = _OPS[i % len(_OPS)]
        shape = [1, 1 + i // 1000, 32 * (1 + i % 1000 // 10), 32 * (1 + i % 10)]
        args = {"arg0": tensor(shape, rng.choice(_DTYPES), i % 3 == 0), "arg1": tensor(shape, _DTYPES[0], False)}
        operations[op]["configurations"].append(
            {
                "config_id": i + 1,
                "config_hash": config_hash(op, args, _MACHINE),
                "arguments": args,
                "executions": [
                    {
                        "source": f"models/demo_{i % 17}.py [HF_MODEL:org/model-{i % 17}]",
                        "machine_info": _MACHINE,
                        "count": 1 + i % 4,
                        "trace_uid": trace_uid,
                    }
                ],
            }
        )
    return {"operations": operations, "metadata": {}}


def scalar_store(n: int, trace_uid: str = "synthetic") -> dict[str, Any]:
    """n distinct ttnn.add configs that differ in their scalar operand only: n vectors over four
    distinct tensors, so an enqueue of them spends its time storing and queueing, not validating."""
    configs = []
    for i in range(n):
        args = {"arg0": tensor([1, 1, 32 * (1 + i % 4), 64], _DTYPES[0], False), "arg1": 0.5 * i}
        configs.append(
            {
                "config_id": i + 1,
                "config_hash": config_hash("ttnn.add", args, _MACHINE),
                "arguments": args,
                "executions": [
                    {"source": "models/demo.py [HF_MODEL:org/model]", "machine_info": _MACHINE, "count": 1,
                     "trace_uid": trace_uid},
                ],
            }
        )  # fmt: skip
    return {"operations": {"ttnn.add": {"configurations": configs}}, "metadata": {}}


def synthetic_trace_result(n: int, uid: str, model: str = "org/model", machine: str = "n300", seed: int = 0):
    """A finished fleet trace job's result (broker/traces/jobs.py) carrying n distinct configs."""
    store = synthetic_store(n, seed, trace_uid=uid)
    configs = [
        [op, f"models/{model}.py::test_model", 1 + c["config_id"] % 4, c["config_hash"], c["arguments"], {}]
        for op, body in store["operations"].items()
        for c in body["configurations"]
    ]
    return {"uid": uid, "model": model, "machine": machine, "test": f"models/{model}.py::test_model",
            "outcome": "passed", "message": "", "tests": {f"models/{model}.py::test_model": "passed"},
            "configs": configs, "machine_info": _MACHINE, "host": "synthetic", "ttnn_version": "0.81.1",
            "duration_s": 1.0, "started": 0.0, "finished": 1.0}  # fmt: skip
