"""`config_hash` with tt-metal's meaning, so our results join with their dashboards.

sha256 of `json.dumps({"operation", "arguments", "hardware", "mesh"}, sort_keys=True)` where
`arguments` is the entry's argument dict as stored (current dialect), `hardware` is
`[board_type, device_series, card_count]` (None without a board type) and `mesh` is derived from
the legacy `machine_info.tensor_placements[0]` (None for current traces, whose placement lives
per tensor inside `arguments`). Verified against every stored hash in tt-metal's add-sweep master.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from tracer.cppjson import parse_int_list
from tracer.machine import hardware_key


def _legacy_mesh(info: dict[str, Any] | None) -> dict[str, Any] | None:
    placements = (info or {}).get("tensor_placements") or []
    if not placements or not isinstance(placements[0], dict):
        return None
    first = placements[0]
    mesh_shape = parse_int_list(first.get("mesh_device_shape"))
    if not mesh_shape:
        return None
    match = re.search(r"PlacementShard\((\d+)\)", str(first.get("placement") or ""))
    return {
        "mesh_shape": mesh_shape,
        "placement_type": "shard" if match else "replicate",
        "shard_dim": int(match.group(1)) if match else None,
    }


def config_hash(operation: str, arguments: Any, machine_info: dict[str, Any] | None) -> str:
    normalized = {
        "operation": operation,
        "arguments": arguments,
        "hardware": hardware_key(machine_info),
        "mesh": _legacy_mesh(machine_info),
    }
    return hashlib.sha256(json.dumps(normalized, sort_keys=True).encode()).hexdigest()
