"""tt-metal's current argument dialect, written back from what sweepctl reads.

tt-metal's sweep loader (master_config_loader_v2) takes an argument as a tensor only when it is
`{"type": "ttnn.Tensor", "original_shape", "original_dtype": "DataType.X", "layout": "Layout.X",
"storage_type", "memory_config", "tensor_placement"}`; the graph tracer's `{"Tensor": {tensor_spec}}`
and its `DataType::X` spellings (dialect 1) read as opaque values. Stores we write carry the current
spelling for every input dialect.

A conversion never changes what a config means: each argument is converted only when its canonical
form (tracer.args) is the same before and after; otherwise it is kept as read. A field the old
tracer never recorded (a layout without page_config) is left out, not invented.
"""

from __future__ import annotations

from typing import Any

from tracer.args import canonical_memory_config, canonical_value, is_unparsed
from tracer.entry import argument_text


def has_legacy_spelling(arguments: dict[str, Any]) -> bool:
    """Cheap pre-check so current stores skip the conversion walk: the graph tracer's spellings sit
    in an argument itself, in a list of them (concat's tensors) or in a memory config argument."""
    for value in arguments.values():  # a plain loop: import runs this once per config
        if isinstance(value, list):
            if any(map(_legacy, value)):
                return True
        elif _legacy(value):
            return True
    return False


def _legacy(value: Any) -> bool:
    if isinstance(value, str):
        return "::" in value
    if isinstance(value, dict):
        if "Tensor" in value:
            return True
        layout = value.get("memory_layout")
        return layout is not None and "::" in str(layout)
    return False


def current_arguments(arguments: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(arguments in the current spelling, whether any argument changed)."""
    out: dict[str, Any] = {}
    changed = False
    for name, value in arguments.items():
        new = _current(value)
        if new is not value and canonical_value(new) == canonical_value(value):
            out[name] = new
            changed = True
        else:
            out[name] = value
    return (out, True) if changed else (arguments, False)


def _current(value: Any) -> Any:
    if isinstance(value, str):
        return _enum_object(value)
    if isinstance(value, list):
        items = [_current(item) for item in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if not isinstance(value, dict) or "UnparsedElement" in value:
        return value
    if set(value) == {"Tensor"}:
        return _tensor(value["Tensor"])
    if "memory_layout" in value and "buffer_type" in value:
        if b"::" not in argument_text(value):
            return value  # current spelling already: keep every traced key (the hash covers them)
        rendered = render_memory_config(canonical_memory_config(value))
        return value if rendered is None else rendered
    out = {key: _current(item) for key, item in value.items()}
    return out if any(out[key] is not value[key] for key in value) else value


def _enum_object(text: str) -> Any:
    """`DataType::BFLOAT16` -> `{"type": "DataType", "repr": "DataType.BFLOAT16"}`, as the current
    tracer writes enum arguments; anything else is returned unchanged."""
    if "::" not in text:
        return text
    parsed = canonical_value(text)
    if isinstance(parsed, dict) and "enum" in parsed and isinstance(parsed["value"], str):
        return {"type": parsed["enum"], "repr": f"{parsed['enum']}.{parsed['value']}"}
    return text


def render_grid(grid: list[dict[str, list[int]]]) -> list[dict[str, dict[str, int]]]:
    return [
        {"start": {"x": r["start"][0], "y": r["start"][1]}, "end": {"x": r["end"][0], "y": r["end"][1]}} for r in grid
    ]


def render_memory_config(mc: Any) -> dict[str, Any] | None:
    """A canonical memory config in tt-metal's spelling; None when any part of it is unreadable."""
    if not isinstance(mc, dict) or is_unparsed(mc) or "nd_shard_spec" in mc:
        return None
    if is_unparsed(mc["memory_layout"]) or is_unparsed(mc["buffer_type"]):
        return None
    spec = mc["shard_spec"]
    if spec is not None:
        if is_unparsed(spec):
            return None
        spec = {"grid": render_grid(spec["grid"]), "shape": list(spec["shape"]), "orientation": spec["orientation"]}
    return {
        "memory_layout": f"TensorMemoryLayout.{mc['memory_layout']}",
        "buffer_type": f"BufferType.{mc['buffer_type']}",
        "shard_spec": spec,
    }


def _tensor(raw: Any) -> Any:
    """The graph tracer's tensor as the current tracer writes one; the original when it has no spec."""
    spec = raw.get("tensor_spec") if isinstance(raw, dict) else None
    if not isinstance(spec, dict):
        return {"Tensor": raw}
    canonical = canonical_value({"Tensor": raw})["tensor"]
    layout = spec.get("tensor_layout") or {}
    out: dict[str, Any] = {"type": "ttnn.Tensor"}
    shape = canonical["shape"]
    out["original_shape"] = spec.get("logical_shape") if is_unparsed(shape) else shape
    dtype = canonical["dtype"]
    out["original_dtype"] = layout.get("dtype") if is_unparsed(dtype) else f"DataType.{dtype}"
    if not is_unparsed(canonical["layout"]):
        out["layout"] = f"Layout.{canonical['layout']}"
    elif raw.get("layout") is not None:
        out["layout"] = raw["layout"]
    if canonical["storage"] is not None:
        out["storage_type"] = f"StorageType.{canonical['storage']}"
    elif raw.get("storage_type") is not None:
        out["storage_type"] = raw["storage_type"]
    if "memory_config" in layout:
        rendered = render_memory_config(canonical["memory_config"])
        out["memory_config"] = layout["memory_config"] if rendered is None else rendered
    if raw.get("tensor_placement") is not None:
        out["tensor_placement"] = raw["tensor_placement"]
    return out
