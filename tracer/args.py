"""The canonical config model: traced arguments read into names, never enum ints or C++ reprs.

A canonical config is `{"op", "args": [positional...], "kwargs": {name: value}}`. A tensor is
`{"tensor": {"shape", "dtype", "layout", "memory_config", "placement", "storage"}}`; a memory
config `{"memory_layout", "buffer_type", "shard_spec"}`; an enum `{"enum": type, "value": NAME}`.
Values older tracers wrote as text become values: lists (`"[[0, 0], [0, 13]]"`, `{"Shape": [..]}`,
`Shape([1, 8, 1, 1])`), mesh coordinates `{"mesh_coordinates": [[r, c], ...]}`, tiles
`{"tile": [h, w]}`, and config objects from their repr `{"object": Name, "fields": {...}}`.
Anything that cannot be read is kept verbatim as `{"unparsed": raw, "reason": why}` and
counted — tt-metal's loader silently turns an unknown dtype into bfloat16; we never default.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any

from tracer.cppjson import parse_int_list, parse_number_list
from tracer.jsonio import memoized

DTYPES = frozenset(
    {"BFLOAT16", "FLOAT32", "UINT32", "BFLOAT8_B", "BFLOAT4_B", "UINT8", "UINT16", "INT32", "FP8_E4M3", "INT8"}
)
LAYOUTS = frozenset({"ROW_MAJOR", "TILE"})
MEMORY_LAYOUTS = frozenset({"INTERLEAVED", "HEIGHT_SHARDED", "WIDTH_SHARDED", "BLOCK_SHARDED", "ND_SHARDED"})
BUFFER_TYPES = frozenset({"DRAM", "L1", "L1_SMALL", "TRACE", "SYSTEM_MEMORY"})
ORIENTATIONS = frozenset({"ROW_MAJOR", "COL_MAJOR"})
STORAGE_TYPES = frozenset({"DEVICE", "HOST", "MULTI_DEVICE_HOST"})
_ENUM_SETS = {
    "DataType": DTYPES,
    "Layout": LAYOUTS,
    "TensorMemoryLayout": MEMORY_LAYOUTS,
    "BufferType": BUFFER_TYPES,
    "ShardOrientation": ORIENTATIONS,
    "StorageType": STORAGE_TYPES,
}
_NULLS = frozenset({"None", "nullopt", "std::nullopt", "null"})
_POSITIONAL = re.compile(r"arg(\d+)")
_ENUM_TEXT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\.|::)([A-Za-z0-9_]+)")
_COORD = re.compile(r"\"?x\"?\s*[:=]\s*(-?\d+)\s*,\s*\"?y\"?\s*[:=]\s*(-?\d+)")
_SHAPE = re.compile(r"shape\"?\s*[:=]\s*[\[{]\s*([\d,\s]+)[\]}]")
_ORIENT = re.compile(r"(ROW_MAJOR|COL_MAJOR)")
_MC_FIELD = re.compile(r"(memory_layout|buffer_type)\s*=\s*([A-Za-z_:.]+)")
_SHAPE_REPR = re.compile(r"Shape\((\[[-\d,\s]*\])\)")
_MESH_COORD = re.compile(r"MeshCoordinate\(\[\s*(-?\d+)\s*,\s*(-?\d+)\s*\]\)")
_TILE_REPR = re.compile(r"Tile with shape: (\[\s*\d+\s*,\s*\d+\s*\])")
_OBJECT_REPR = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\((.*)\)", re.DOTALL)
_FIELD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)


_MEMO_LIMIT = 1 << 16


def _memoized(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return memoized(convert, _MEMO_LIMIT)


def unparsed(raw: Any, reason: str) -> dict[str, Any]:
    return {"unparsed": raw, "reason": reason}


def is_unparsed(value: Any) -> bool:
    return isinstance(value, dict) and "unparsed" in value and "reason" in value


def enum_name(raw: Any, kind: str) -> str | None:
    """`DataType.BFLOAT16`, `DataType::BFLOAT16`, `bfloat16`, `Layout.TILE` -> the enum's name, or None."""
    return _enum_name(raw, kind) if isinstance(raw, str) else None


@functools.lru_cache(maxsize=4096)
def _enum_name(raw: str, kind: str) -> str | None:
    name = re.split(r"\.|::", raw.strip())[-1].upper()
    if kind == "StorageType" and name.endswith("_STORAGE"):  # operation_tracer docs spell it DEVICE_STORAGE
        name = name[: -len("_STORAGE")]
    return name if name in _ENUM_SETS[kind] else None


def _named(raw: Any, kind: str) -> Any:
    name = enum_name(raw, kind)
    return name if name is not None else unparsed(raw, f"unknown {kind}")


def canonical_grid(raw: Any) -> list[dict[str, list[int]]] | None:
    """Every traced spelling of a core-range set -> [{"start": [x, y], "end": [x, y]}, ...]."""
    coords: list[tuple[int, int]] = []

    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            if "start" in node and "end" in node:
                return walk(node["start"]) and walk(node["end"])
            if set(node) >= {"x", "y"} and all(isinstance(node[k], int) for k in ("x", "y")):
                coords.append((node["x"], node["y"]))
                return True
            return False
        if isinstance(node, list):
            return all(walk(item) for item in node)
        if isinstance(node, str):
            found = _COORD.findall(node)
            coords.extend((int(x), int(y)) for x, y in found)
            return bool(found)
        return False

    if not walk(raw) or not coords or len(coords) % 2:
        return None
    return [
        {"start": [coords[i][0], coords[i][1]], "end": [coords[i + 1][0], coords[i + 1][1]]}
        for i in range(0, len(coords), 2)
    ]


def canonical_shard_spec(raw: Any) -> Any:
    if raw is None or (isinstance(raw, str) and raw.strip() in _NULLS):
        return None
    if isinstance(raw, dict):
        grid = canonical_grid(raw.get("grid"))
        shape = parse_int_list(raw.get("shape", raw.get("shard_shape")))
        orientation = enum_name(raw.get("orientation", "ROW_MAJOR"), "ShardOrientation")
    elif isinstance(raw, str):
        grid = canonical_grid(raw)
        match = _SHAPE.search(raw)
        shape = [int(p) for p in match.group(1).replace(" ", "").split(",") if p] if match else None
        found = _ORIENT.search(raw)
        orientation = found.group(1) if found else None
    else:
        return unparsed(raw, "shard spec is neither a dict nor text")
    if grid is None or shape is None or orientation is None:
        return unparsed(raw, "shard spec without a readable grid, shape or orientation")
    return {"grid": grid, "shape": shape, "orientation": orientation}


@_memoized
def canonical_memory_config(raw: Any) -> Any:
    if isinstance(raw, str):
        if raw.strip() in _NULLS:
            return None
        fields = dict(_MC_FIELD.findall(raw))
        if "memory_layout" not in fields or "buffer_type" not in fields:
            return unparsed(raw, "memory config text without memory_layout/buffer_type")
        spec_text = raw.split("shard_spec=", 1)[1] if "shard_spec=" in raw else None
        if spec_text is not None and spec_text.startswith(("std::nullopt", "nullopt", "None")):
            spec_text = None
        raw = {**fields, "shard_spec": spec_text}
    if not isinstance(raw, dict):
        return unparsed(raw, "memory config is not a dict")
    if "type" in raw and ("value" in raw or "repr" in raw) and "memory_layout" not in raw:
        return canonical_memory_config(raw.get("value", raw.get("repr")))
    layout = _named(raw.get("memory_layout"), "TensorMemoryLayout")
    result: dict[str, Any] = {
        "memory_layout": layout,
        "buffer_type": _named(raw.get("buffer_type"), "BufferType"),
        "shard_spec": canonical_shard_spec(raw.get("shard_spec")),
    }
    nd = raw.get("nd_shard_spec")
    if layout == "ND_SHARDED" and nd is not None and not (isinstance(nd, str) and nd.strip() in _NULLS):
        result["nd_shard_spec"] = unparsed(nd, "ND shard specs do not round-trip through ttnn")
    return result


@_memoized
def canonical_placement(raw: Any) -> dict[str, Any] | None:
    """Per-tensor mesh placement, from the master store's strings or operation_tracer's lists."""
    if not isinstance(raw, dict):
        return None
    placements = raw.get("placement", raw.get("placements"))
    if isinstance(placements, str):
        placements = re.findall(r"Placement(?:Shard\(-?\d+\)|Replicate)", placements)
    names = []
    for item in placements or []:
        match = re.fullmatch(r"PlacementShard\((-?\d+)\)", str(item))
        names.append(f"shard({match.group(1)})" if match else "replicate")
    return {
        "placements": names,
        "distribution_shape": parse_int_list(raw.get("distribution_shape")),
        "mesh_shape": parse_int_list(raw.get("mesh_device_shape", raw.get("shape"))),
    }


@_memoized
def canonical_tensor(raw: dict[str, Any]) -> dict[str, Any]:
    shape = parse_int_list(raw.get("original_shape", raw.get("shape", raw.get("logical_shape"))))
    dtype_raw = raw.get("original_dtype", raw.get("dtype"))
    layout_raw = raw.get("layout")
    return {
        "tensor": {
            "shape": shape if shape is not None else unparsed(raw.get("original_shape"), "tensor shape"),
            "dtype": _named(dtype_raw, "DataType"),
            "layout": _named(layout_raw, "Layout"),
            "memory_config": canonical_memory_config(raw["memory_config"]) if "memory_config" in raw else None,
            "placement": canonical_placement(raw.get("tensor_placement", raw.get("mesh_device"))),
            "storage": enum_name(raw.get("storage_type"), "StorageType"),
        }
    }


def canonical_legacy_tensor(raw: Any) -> dict[str, Any]:
    """The graph tracer's `{"Tensor": {"tensor_spec": {"logical_shape", "tensor_layout": ...}}}`."""
    spec = raw.get("tensor_spec") if isinstance(raw, dict) else None
    if not isinstance(spec, dict):
        return unparsed({"Tensor": raw}, "tensor without a tensor_spec")
    layout = spec.get("tensor_layout") or {}
    page = (layout.get("page_config") or {}).get("config") or {}
    shape = parse_int_list(spec.get("logical_shape"))
    return {
        "tensor": {
            "shape": shape if shape is not None else unparsed(spec.get("logical_shape"), "tensor shape"),
            "dtype": _named(layout.get("dtype"), "DataType"),
            "layout": "TILE"
            if "tile" in page
            else "ROW_MAJOR"
            if "row_major" in page
            else _named(raw.get("layout"), "Layout"),
            "memory_config": canonical_memory_config(layout["memory_config"]) if "memory_config" in layout else None,
            "placement": canonical_placement(raw.get("tensor_placement")),
            "storage": enum_name(raw.get("storage_type"), "StorageType"),
        }
    }


def canonical_value(raw: Any) -> Any:
    if isinstance(raw, float) and not math.isfinite(raw):  # the vector contract: special floats as strings
        return "nan" if math.isnan(raw) else ("inf" if raw > 0 else "-inf")
    if raw is None or isinstance(raw, (bool, int, float)):
        return raw
    if isinstance(raw, str):
        text = raw.strip()
        if text in _NULLS:
            return None
        if "unsupported type" in text:
            return unparsed(raw, "traced as an unsupported type")
        match = _ENUM_TEXT.fullmatch(text)
        if match and match.group(1) in _ENUM_SETS:
            return {"enum": match.group(1), "value": _named(text, match.group(1))}
        numbers = parse_number_list(text)  # old tracers wrote lists as text: "[[0, 0], [0, 13]]"
        return numbers if numbers is not None else raw
    if isinstance(raw, list):
        return [canonical_value(item) for item in raw]
    if isinstance(raw, dict):
        return _canonical_dict(raw)
    return unparsed(repr(raw), f"unexpected {type(raw).__name__}")


def _canonical_dict(raw: dict[str, Any]) -> Any:
    if "UnparsedElement" in raw:
        return unparsed(raw, "UnparsedElement that could not be repaired")
    if set(raw) == {"Tensor"}:
        return canonical_legacy_tensor(raw["Tensor"])
    if set(raw) == {"Shape"}:  # the graph tracer's ttnn::Shape
        shape = parse_int_list(raw["Shape"])
        return shape if shape is not None else unparsed(raw, "Shape without a list of ints")
    if set(raw) == {"MemoryConfig"}:
        return {"memory_config": canonical_memory_config(raw["MemoryConfig"])}
    kind = raw.get("type")
    if kind in ("ttnn.Tensor", "torch.Tensor") or "original_shape" in raw:
        return canonical_tensor(raw)
    if "memory_layout" in raw and "buffer_type" in raw:
        return {"memory_config": canonical_memory_config(raw)}
    if kind == "MemoryConfig":
        return {"memory_config": canonical_memory_config(raw)}
    if kind == "MeshDevice":
        return {"device": {"mesh_shape": parse_int_list(raw.get("shape"))}}
    if kind in ("int", "float", "bool", "str") and "value" in raw:
        return raw["value"]
    if isinstance(kind, str) and set(raw) <= {"type", "repr", "value"}:
        text = raw.get("repr", raw.get("value"))
        if text is None:
            return unparsed(raw, f"{kind} traced without a value")
        if kind in _ENUM_SETS:
            return {"enum": kind, "value": _named(text, kind)}
        if " object at 0x" in str(text):
            return {"runtime_object": kind}
        match = _ENUM_TEXT.fullmatch(str(text).strip())
        if match and match.group(1) == kind:
            return {"enum": kind, "value": match.group(2)}
        value = value_from_repr(kind, str(text))
        return value if value is not None else unparsed(raw, f"opaque {kind}")
    return {key: canonical_value(value) for key, value in raw.items()}


def value_from_repr(kind: str, text: str) -> Any:
    """The value a typed repr carries, or None when it carries none we can read: `Shape([1, 8])` ->
    [1, 8]; a set of `MeshCoordinate([r, c])` -> {"mesh_coordinates": [[r, c], ...]}; `Tile with
    shape: [32, 32]` -> {"tile": [32, 32]}; `Name(field=value, ...)` (program configs) ->
    {"object": Name, "fields": {...}}."""
    text = text.strip()
    if kind == "Shape":
        match = _SHAPE_REPR.fullmatch(text)
        return parse_int_list(match.group(1)) if match else None
    if kind in ("set", "list", "tuple") and "MeshCoordinate" in text:
        coords = [[int(r), int(c)] for r, c in _MESH_COORD.findall(text)]
        return {"mesh_coordinates": sorted(coords)} if len(coords) == text.count("MeshCoordinate") else None
    if kind == "Tile":
        match = _TILE_REPR.fullmatch(text)
        return {"tile": parse_int_list(match.group(1))} if match else None
    match = _OBJECT_REPR.fullmatch(text)
    if match and match.group(1) == kind:
        fields = _repr_fields(match.group(2))
        return {"object": kind, "fields": fields} if fields is not None else None
    return None


def _repr_fields(text: str) -> dict[str, Any] | None:
    """`a=1,b=(x=4,y=7),c=std::nullopt` -> {"a": 1, "b": {"x": 4, "y": 7}, "c": None}; None when a
    part is not `name=value`."""
    fields: dict[str, Any] = {}
    for part in _split_top(text):
        match = _FIELD.fullmatch(part.strip())
        if not match:
            return None
        name, value = match.group(1), match.group(2).strip()
        if value.startswith("(") and value.endswith(")"):
            nested = _repr_fields(value[1:-1])
            if nested is None:
                return None
            fields[name] = nested
        else:
            fields[name] = _repr_scalar(value)
    return fields


def _split_top(text: str) -> list[str]:
    """Split on commas outside parentheses and brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    tail = text[start:]
    return parts + [tail] if tail.strip() or parts else parts


def _repr_scalar(text: str) -> Any:
    if text in _NULLS:
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    numbers = parse_number_list(text)
    return numbers if numbers is not None else text


def canonical_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Split `arg0, arg1, ...` into ordered positionals; every other key is a named argument."""
    positional: dict[int, Any] = {}
    named: dict[str, Any] = {}
    for key, value in arguments.items():
        match = _POSITIONAL.fullmatch(key)
        if match:
            positional[int(match.group(1))] = canonical_value(value)
        else:
            named[key] = canonical_value(value)
    return {"args": [positional[i] for i in sorted(positional)], "kwargs": named}


def count_unparsed(value: Any) -> int:
    if is_unparsed(value):
        return 1
    if isinstance(value, dict):
        return sum(count_unparsed(v) for v in value.values())
    if isinstance(value, list):
        return sum(count_unparsed(v) for v in value)
    return 0
