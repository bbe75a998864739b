"""Canonical memory configs <-> ttnn MemoryConfig, exactly as traced (never a DRAM fallback).

Only for processes that may import ttnn (the validation child, executors). Configs travel
between processes as canonical dicts: `MemoryConfig` cannot cross a process boundary and its hash() is unreliable.
"""

from __future__ import annotations

from typing import Any

_NAMES = {
    "memory_layout": {0: "INTERLEAVED", 2: "HEIGHT_SHARDED", 3: "WIDTH_SHARDED", 4: "BLOCK_SHARDED", 5: "ND_SHARDED"},
    "buffer_type": {0: "DRAM", 1: "L1", 3: "L1_SMALL", 4: "TRACE"},
    "orientation": {0: "ROW_MAJOR", 1: "COL_MAJOR"},
}


def core_range_set(ttnn: Any, grid: list[dict[str, list[int]]]) -> Any:
    return ttnn.CoreRangeSet([ttnn.CoreRange(ttnn.CoreCoord(*r["start"]), ttnn.CoreCoord(*r["end"])) for r in grid])


def shard_spec(ttnn: Any, spec: dict[str, Any]) -> Any:
    return ttnn.ShardSpec(
        core_range_set(ttnn, spec["grid"]), list(spec["shape"]), ttnn.ShardOrientation[spec["orientation"]]
    )


def to_ttnn(ttnn: Any, mc: dict[str, Any]) -> Any:
    layout = ttnn.TensorMemoryLayout[mc["memory_layout"]]
    buffer = ttnn.BufferType[mc["buffer_type"]]
    if mc.get("shard_spec") is None:
        return ttnn.MemoryConfig(layout, buffer)
    return ttnn.MemoryConfig(layout, buffer, shard_spec(ttnn, mc["shard_spec"]))


def from_ttnn(mc: Any) -> dict[str, Any]:
    """ttnn MemoryConfig -> canonical dict, through its own `to_json()` (the stable form)."""
    import json

    data = json.loads(mc.to_json())
    spec = data.get("shard_spec")
    return {
        "memory_layout": _NAMES["memory_layout"][data["memory_layout"]],
        "buffer_type": _NAMES["buffer_type"][data["buffer_type"]],
        "shard_spec": None
        if spec is None
        else {
            "grid": [
                {"start": [r["start"]["x"], r["start"]["y"]], "end": [r["end"]["x"], r["end"]["y"]]}
                for r in spec["grid"]
            ],
            "shape": list(spec["shape"]),
            "orientation": _NAMES["orientation"][spec["orientation"]],
        },
    }
