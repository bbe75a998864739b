"""Canonical configs written for people: one line per argument, the way analyze_operations shows them."""

from __future__ import annotations

import json
from typing import Any

from tracer.args import is_unparsed


def _grid(grid: list[dict[str, list[int]]]) -> str:
    cores = sum((r["end"][0] - r["start"][0] + 1) * (r["end"][1] - r["start"][1] + 1) for r in grid)
    ranges = ", ".join(f"({r['start'][0]},{r['start'][1]})-({r['end'][0]},{r['end'][1]})" for r in grid)
    return f"grid [{ranges}] ({cores} cores)"


def describe_memory_config(mc: Any) -> str:
    if mc is None:
        return "default memory"
    if is_unparsed(mc):
        return f"UNPARSED memory config ({mc['reason']})"
    text = f"{_text(mc['buffer_type'])} {_text(mc['memory_layout'])}"
    spec = mc.get("shard_spec")
    if isinstance(spec, dict) and not is_unparsed(spec):
        text += f" {_grid(spec['grid'])} shard {spec['shape']} {spec['orientation']}"
    elif spec is not None:
        text += f" UNPARSED shard spec ({spec['reason']})"
    return text


def _text(value: Any) -> str:
    return f"UNPARSED<{value['unparsed']!r}: {value['reason']}>" if is_unparsed(value) else str(value)


def describe_value(value: Any) -> str:
    if is_unparsed(value):
        return _text(value)
    if isinstance(value, dict):
        if "tensor" in value:
            t = value["tensor"]
            text = (
                f"tensor {_text(t['shape'])} {_text(t['dtype'])} {_text(t['layout'])} "
                f"{describe_memory_config(t['memory_config'])}"
            )
            placement = t.get("placement")
            if placement and placement.get("placements"):
                mesh = placement.get("mesh_shape") or []
                text += f" placement {','.join(placement['placements'])} on mesh {'x'.join(map(str, mesh))}"
            return text
        if "memory_config" in value and len(value) == 1:
            return describe_memory_config(value["memory_config"])
        if "enum" in value:
            return f"{value['enum']}.{_text(value['value'])}"
        if "device" in value:
            return f"mesh device {value['device'].get('mesh_shape')}"
        if "runtime_object" in value:
            return f"<{value['runtime_object']} created at run time>"
    return json.dumps(value, default=str)


def describe_config(canonical: dict[str, Any]) -> list[str]:
    lines = [f"arg{i}: {describe_value(v)}" for i, v in enumerate(canonical["args"])]
    lines += [f"{name}: {describe_value(v)}" for name, v in canonical["kwargs"].items()]
    return lines
