"""`config_hash` with tt-metal's meaning, so our results join with their dashboards.

sha256 of `json.dumps({"operation", "arguments", "hardware", "mesh"}, sort_keys=True)` where
`arguments` is the entry's argument dict as stored (current dialect), `hardware` is
`[board_type, device_series, card_count]` (None without a board type) and `mesh` is derived from
the legacy `machine_info.tensor_placements[0]` (None for current traces, whose placement lives
per tensor inside `arguments`); tt-metal hashes the first execution's machine.

Two versions exist in real stores. tt-metal's current tracer normalises the arguments first
(integer `hash` keys dropped: a memory config's device-specific hash; a null `shard_spec` becomes
the string "None"; `" at 0x…"` object addresses stripped from strings); stores written before
that change hold the unnormalised (legacy) hash. Everything sweepctl creates gets the current one.
tt-metal hashed special floats as floats and then stored them as the strings "inf"/"-inf"/"nan",
so a stored hash is also tried with those strings read back as floats.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from tracer.cppjson import parse_int_list
from tracer.machine import hardware_key

CURRENT, LEGACY = "current", "legacy"
VERSIONS = (CURRENT, LEGACY)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_SPECIAL = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


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


def strip_addresses(text: str) -> str:
    """`<… object at 0x7f63…>` -> `<… object>`: a run-time pointer is no part of a config."""
    return _ADDRESS.sub("", text) if " at 0x" in text else text


def normalize_for_hash(value: Any) -> Any:
    """tt-metal's current normalisation, copy-on-write: the input is never changed, and an argument
    tree normalisation leaves alone is returned as is (no copy)."""
    if isinstance(value, str):
        return strip_addresses(value)
    if isinstance(value, list):
        items = [normalize_for_hash(item) for item in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    changed = False
    for key, item in value.items():
        if key == "hash" and isinstance(item, int):  # bools included, as tt-metal's isinstance check does
            changed = True
            continue
        if key == "shard_spec" and item is None:
            new = "None"
        else:
            new = normalize_for_hash(item)
        changed = changed or new is not item
        out[key] = new
    return out if changed else value


def _digest(operation: str, arguments: Any, machine_info: dict[str, Any] | None) -> str:
    payload = {
        "operation": operation,
        "arguments": arguments,
        "hardware": hardware_key(machine_info),
        "mesh": _legacy_mesh(machine_info),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def config_hash(operation: str, arguments: Any, machine_info: dict[str, Any] | None) -> str:
    """The current version: what tt-metal's tracer writes today and what sweepctl gives new configs."""
    return _digest(operation, normalize_for_hash(arguments), machine_info)


def legacy_config_hash(operation: str, arguments: Any, machine_info: dict[str, Any] | None) -> str:
    """The unnormalised version older stores hold (e.g. the DeepSeek-V3 Galaxy master)."""
    return _digest(operation, arguments, machine_info)


def _special_floats(value: Any) -> Any:
    """The stored strings "inf"/"-inf"/"nan" as the floats tt-metal hashed (copy-on-write)."""
    if isinstance(value, str):
        return _SPECIAL.get(value, value)
    if isinstance(value, list):
        items = [_special_floats(item) for item in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if isinstance(value, dict):
        out = {key: _special_floats(item) for key, item in value.items()}
        return out if any(out[key] is not value[key] for key in value) else value
    return value


def hash_version(stored: str, operation: str, arguments: Any, machine_info: dict[str, Any] | None) -> str | None:
    """Which version of config_hash reproduces `stored` (CURRENT when both agree), or None: stale."""
    variants = [arguments]
    as_floats = _special_floats(arguments)
    if as_floats is not arguments:
        variants.append(as_floats)
    for args in variants:
        if config_hash(operation, args, machine_info) == stored:
            return CURRENT
        if legacy_config_hash(operation, args, machine_info) == stored:
            return LEGACY
    return None
