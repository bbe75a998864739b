"""Config objects (program configs, compute kernel configs, core coordinates) from their traced
form to the ttnn objects the op takes. ttnn refuses a plain map where it wants one (TypeError inside
the op call), so every such argument is rebuilt before the call, on both backends.

Traces hold them two ways: read from their repr, `{"object": Class, "fields": {...}}`
(tracer.args), or as a bare map of fields with no class name — a compute kernel config
(`math_fidelity`, ...), a matmul program config (`in0_block_w`, `per_core_M`, ...), a core
coordinate `{"x", "y"}`. The class of a bare map is named from its fields (and, for the two
DRAM-sharded matmul configs that share their fields, from the weight: a HEIGHT_SHARDED DRAM weight is
the batched one). A class or field sweepctl does not know is decided at expansion (`unknown`: the
vector is NOT_RUN naming it); a known field whose value does not convert raises ConfigObjectError
naming class and field, before the op is called (ERROR, sweepctl's).

Each field has a kind; a kind reads the traced value into a plain Python value (`plain`, no ttnn),
which `build` turns into ttnn objects, `code` into the constructor as source (sweepctl repro) and
`read_back` gets again from the built object's attributes (tests). Field lists and types follow the
constructors of ttnn 0.81.1.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# Canonical values that are not config objects (tracer.args): everything else that is a map is one.
_CANONICAL_KEYS = frozenset({"tensor", "enum", "memory_config", "device", "runtime_object", "mesh_coordinates",
                             "tile", "unparsed"})  # fmt: skip

_MATMUL_2D = {"compute_with_storage_grid_size": "coord", "in0_block_w": "int", "out_subblock_h": "int",
              "out_subblock_w": "int", "out_block_h": "int?", "out_block_w": "int?", "per_core_M": "int",
              "per_core_N": "int", "fused_activation": "unary?", "allowed_worker_cores": "ranges?"}  # fmt: skip
_DRAM_SHARDED = {"in0_block_w": "int", "per_core_M": "int", "per_core_N": "int", "fused_activation": "unary?"}
_LAYERNORM = {"legacy_reduction": "bool", "legacy_rsqrt": "bool", "use_welford": "bool"}
_SOFTMAX_SHARDED = {"compute_with_storage_grid_size": "coord", "subblock_w": "int", "block_h": "int", "block_w": "int"}

# class -> field -> kind ("?": None allowed). The keyword arguments of each ttnn constructor.
FIELDS: dict[str, dict[str, str]] = {
    "CoreCoord": {"x": "int", "y": "int"},
    "WormholeComputeKernelConfig": {
        "math_fidelity": "enum:MathFidelity", "math_approx_mode": "bool", "fp32_dest_acc_en": "bool",
        "packer_l1_acc": "bool", "dst_full_sync_en": "bool", "throttle_level": "enum:ThrottleLevel",
    },
    "LayerNormDefaultProgramConfig": _LAYERNORM,
    "LayerNormShardedMultiCoreProgramConfig": {**_SOFTMAX_SHARDED, "inplace": "bool", **_LAYERNORM},
    "SoftmaxDefaultProgramConfig": {},
    "SoftmaxShardedMultiCoreProgramConfig": _SOFTMAX_SHARDED,
    "SDPAProgramConfig": {
        "compute_with_storage_grid_size": "coord", "sub_core_grids": "ranges?", "q_chunk_size": "int",
        "k_chunk_size": "int", "exp_approx_mode": "bool?", "max_cores_per_head_batch": "int", "max_k_splits": "int",
        "matmul_math_fidelity": "enum:MathFidelity?", "segmented_accumulation": "bool",
    },
    "MatmulMultiCoreReuseProgramConfig": {k: v for k, v in _MATMUL_2D.items()
                                          if k not in ("out_block_h", "out_block_w", "fused_activation")},
    "MatmulMultiCoreReuseMultiCastProgramConfig": {**_MATMUL_2D, "transpose_mcast": "bool", "fuse_batch": "bool"},
    "MatmulMultiCoreReuseMultiCast1DProgramConfig": {
        **_MATMUL_2D, "fuse_batch": "bool", "mcast_in0": "bool", "gather_in0": "bool", "hop_cores": "ranges",
        "num_global_cb_receivers": "int", "untilize_out": "bool", "stream_in1": "bool",
    },
    "MatmulMultiCoreReuseMultiCastDRAMShardedProgramConfig": {**_DRAM_SHARDED, "num_workers_per_dram_bank": "int"},
    "MatmulMultiCoreReuseMultiCastBatchedDRAMShardedProgramConfig": _DRAM_SHARDED,
}  # fmt: skip
_WEIGHT_SLOTS = ("1", "input_tensor_b", "weight")


class ConfigObjectError(ValueError):
    """A traced field of a config object that does not convert: sweepctl's failure, never the op's."""


def name_of(value: Any, args: list[Any], kwargs: dict[str, Any]) -> str | None:
    """The class of a call's argument when it is a config object ("" when it is one whose class
    cannot be named), None when it is not one."""
    if not isinstance(value, dict) or _CANONICAL_KEYS & set(value):
        return None
    if "object" in value and "fields" in value:
        return str(value["object"])
    keys = set(value)
    if "math_fidelity" in keys:  # ttnn 0.81.1 has this one class for Wormhole and Blackhole
        return "WormholeComputeKernelConfig"
    if keys == {"x", "y"}:
        return "CoreCoord"
    if {"in0_block_w", "per_core_M", "per_core_N"} <= keys:
        if "compute_with_storage_grid_size" not in keys:
            weight = _memory_config(_slot(args, kwargs, _WEIGHT_SLOTS))
            batched = weight.get("memory_layout") == "HEIGHT_SHARDED" and weight.get("buffer_type") == "DRAM"
            return f"MatmulMultiCoreReuseMultiCast{'Batched' if batched else ''}DRAMShardedProgramConfig"
        if "transpose_mcast" in keys:
            return "MatmulMultiCoreReuseMultiCastProgramConfig"
        if "fuse_batch" in keys or "mcast_in0" in keys:
            return "MatmulMultiCoreReuseMultiCast1DProgramConfig"
        return "MatmulMultiCoreReuseProgramConfig"
    return ""


def _fields(value: dict[str, Any]) -> dict[str, Any]:
    return value["fields"] if "object" in value and "fields" in value else value


def objects(args: list[Any], kwargs: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every config object argument of a call: slot ("0", "program_config") -> (class, traced fields)."""
    found = {}
    for slot, value in [*((str(i), v) for i, v in enumerate(args)), *kwargs.items()]:
        name = name_of(value, args, kwargs)
        if name is not None:
            found[slot] = (name, _fields(value))
    return found


# Run-time handles the backends create afresh for each call (workers/device.py); any other object the
# trace holds only as `<X object at 0x...>` has no value to rebuild it from.
RUNTIME_OBJECTS = frozenset({"global_semaphore"})


def _runtime_kinds(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["runtime_object"]] if "runtime_object" in value else []
        return own + [k for v in value.values() for k in _runtime_kinds(v)]
    if isinstance(value, list):
        return [k for v in value for k in _runtime_kinds(v)]
    return []


def unknown(args: list[Any], kwargs: dict[str, Any]) -> str | None:
    """Why sweepctl cannot rebuild a config object of this call (its NOT_RUN reason), or None. An
    object traced only by its address is one: passing None in its place would change the call."""
    for slot, value in [*((str(i), v) for i, v in enumerate(args)), *kwargs.items()]:
        kind = next((k for k in _runtime_kinds(value) if k not in RUNTIME_OBJECTS), None)
        if kind is not None:
            return f"argument {slot} was traced only as a {kind} object address: sweepctl cannot rebuild it"
    for slot, (name, fields) in objects(args, kwargs).items():
        if not name:
            return f"argument {slot} is a config object whose class sweepctl cannot name (fields {', '.join(fields)})"
        known = FIELDS.get(name)
        if known is None:
            return f"argument {slot} is a {name}, a config object sweepctl does not know"
        extra = sorted(set(fields) - set(known))
        if extra:
            return f"argument {slot}: {name} field {extra[0]} is not known to sweepctl"
    return None


# --- kinds: traced value -> plain value -----------------------------------------------------------

_NONE_TEXTS = frozenset({"None", "none", "null", "std::nullopt", "nullopt"})
_RANGE_TEXT = re.compile(r"\[\s*(\d+)\s*-\s*(\d+)\s*-\s*(\d+)\s*-\s*(\d+)\s*\]")
_COORD_TEXT = re.compile(r"\(?\s*(?:x\s*=\s*)?(\d+)\s*[-,]\s*(?:y\s*=\s*)?(\d+)\s*\)?")
_UNARY_TEXT = re.compile(r"(?:UnaryWithParam\(\s*op_type\s*=\s*)?(?:UnaryOpType(?:::|\.))?([A-Za-z_0-9]+)(.*)")


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"{value!r} is not an integer")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(f"{value!r} is not a bool")


def _coord(value: Any) -> tuple[int, int]:
    if isinstance(value, dict) and set(value) == {"x", "y"}:
        return _int(value["x"]), _int(value["y"])
    if isinstance(value, list) and len(value) == 2:
        return _int(value[0]), _int(value[1])
    match = _COORD_TEXT.fullmatch(str(value).strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a core coordinate")
    return int(match.group(1)), int(match.group(2))


def _ranges(value: Any) -> tuple[tuple[tuple[int, int], tuple[int, int]], ...]:
    """Core ranges from canonical grids (`[{"start": [x, y], "end": ...}]`, `{"x", "y"}` corners) or
    ttnn's CoreRangeSet text (`{[1-0 - 3-9], [5-0 - 6-9]}`)."""
    if isinstance(value, str):
        found = _RANGE_TEXT.findall(value)
        if not found and value.strip() not in ("{}", "[]", ""):
            raise ValueError(f"{value!r} is not a set of core ranges")
        return tuple(sorted(((int(a), int(b)), (int(c), int(d))) for a, b, c, d in found))
    if isinstance(value, list) and all(isinstance(r, dict) and {"start", "end"} <= set(r) for r in value):
        return tuple(sorted((_coord(r["start"]), _coord(r["end"])) for r in value))
    raise ValueError(f"{value!r} is not a set of core ranges")


def _member(enum: str) -> Callable[[Any], str]:
    def read(value: Any) -> str:
        if isinstance(value, dict) and value.get("enum") == enum:
            value = value.get("value")
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a {enum} name")
        for prefix in (f"{enum}.", f"{enum}::", f"ttnn.{enum}."):
            if value.startswith(prefix):
                value = value[len(prefix) :]
        if not value.isidentifier():
            raise ValueError(f"{value!r} is not a {enum} name")
        return value

    return read


def _unary(value: Any) -> tuple[str, tuple[float, ...]]:
    """A fused activation as (UnaryOpType member, params): `{"op_type": "SILU"|int-free name, "param":
    [..]}`, `UnaryWithParam(op_type=UnaryOpType::SILU,param=1.0)`, `UnaryOpType.SILU`, `silu`."""
    if isinstance(value, dict) and "op_type" in value:
        op, params = value["op_type"], value.get("param", value.get("params", []))
        params = params if isinstance(params, list) else [params]
    elif isinstance(value, str):
        match = _UNARY_TEXT.fullmatch(value.strip())
        if match is None:
            raise ValueError(f"{value!r} is not an activation")
        op, params = match.group(1), [float(p) for p in re.findall(r"-?\d+(?:\.\d*)?(?:[eE]-?\d+)?", match.group(2))]
    else:
        raise ValueError(f"{value!r} is not an activation")
    if not isinstance(op, str) or not op.isidentifier():
        raise ValueError(f"activation {op!r} is not a UnaryOpType name")
    return op.upper(), tuple(float(p) for p in params)


_KINDS: dict[str, Callable[[Any], Any]] = {"int": _int, "bool": _bool, "coord": _coord, "ranges": _ranges,
                                           "unary": _unary}  # fmt: skip


def _reader(kind: str) -> Callable[[Any], Any]:
    base = kind.rstrip("?")
    return _member(base[5:]) if base.startswith("enum:") else _KINDS[base]


def plain(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Each traced field as a plain value (ints, bools, (x, y), sorted ranges, enum member names,
    (activation, params)); ConfigObjectError naming class and field when one does not read."""
    out = {}
    for field, value in fields.items():
        kind = FIELDS[name][field]
        if value is None or (isinstance(value, str) and value in _NONE_TEXTS):
            if not kind.endswith("?"):
                raise ConfigObjectError(f"{name}.{field}: None where ttnn needs a value")
            out[field] = None
            continue
        try:
            out[field] = _reader(kind)(value)
        except (ValueError, TypeError) as exc:
            raise ConfigObjectError(f"{name}.{field}: {exc}") from None
    return out


# --- plain value -> ttnn object, code, and back ---------------------------------------------------


def _to_ttnn(ttnn: Any, kind: str, value: Any) -> Any:
    base = kind.rstrip("?")
    if value is None:
        return None
    if base == "coord":
        return ttnn.CoreCoord(*value)
    if base == "ranges":
        return ttnn.CoreRangeSet([ttnn.CoreRange(ttnn.CoreCoord(*s), ttnn.CoreCoord(*e)) for s, e in value])
    if base.startswith("enum:"):
        return _enum_member(ttnn, base[5:], value)
    if base == "unary":
        return ttnn.UnaryWithParam(_enum_member(ttnn, "UnaryOpType", value[0]), *value[1])
    return value


def _enum_member(ttnn: Any, enum: str, member: str) -> Any:
    members = getattr(ttnn, enum).__members__
    if member not in members:
        raise ValueError(f"ttnn.{enum} has no member {member}")
    return members[member]


def build(ttnn: Any, name: str, fields: dict[str, Any]) -> Any:
    """The ttnn object; ConfigObjectError naming class and field when a field does not convert or
    ttnn refuses it."""
    values = plain(name, fields)
    kwargs = {}
    for field, value in values.items():
        try:
            kwargs[field] = _to_ttnn(ttnn, FIELDS[name][field], value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ConfigObjectError(f"{name}.{field}: {exc}") from None
    try:
        if name == "CoreCoord":  # positional only
            return ttnn.CoreCoord(kwargs["x"], kwargs["y"])
        return getattr(ttnn, name)(**kwargs)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        text = " ".join(str(exc).split())
        raise ConfigObjectError(f"{name}: ttnn refuses the traced fields ({text[:300]})") from None


def _code_of(kind: str, value: Any) -> str:
    base = kind.rstrip("?")
    if value is None:
        return "None"
    if base == "coord":
        return f"ttnn.CoreCoord({value[0]}, {value[1]})"
    if base == "ranges":
        ranges = ", ".join(f"ttnn.CoreRange(ttnn.CoreCoord({s[0]}, {s[1]}), ttnn.CoreCoord({e[0]}, {e[1]}))"
                           for s, e in value)  # fmt: skip
        return f"ttnn.CoreRangeSet([{ranges}])"
    if base.startswith("enum:"):
        return f"ttnn.{base[5:]}.{value}"
    if base == "unary":
        return f"ttnn.UnaryWithParam({', '.join([f'ttnn.UnaryOpType.{value[0]}', *map(repr, value[1])])})"
    return repr(value)


def code(name: str, fields: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """The constructor as source: (`ttnn.Class`, [(keyword, code)]); CoreCoord positionally."""
    values = plain(name, fields)
    if name == "CoreCoord":
        return "ttnn.CoreCoord", [("", str(values["x"])), ("", str(values["y"]))]
    return f"ttnn.{name}", [(f, _code_of(FIELDS[name][f], v)) for f, v in values.items()]


def read_back(name: str, obj: Any) -> dict[str, Any]:
    """A built object's fields as plain values (what `plain` gives for the traced ones)."""
    out = {}
    for field, kind in FIELDS[name].items():
        value = getattr(obj, field)
        base = kind.rstrip("?")
        if value is None:
            out[field] = None
        elif base == "coord":
            out[field] = (value.x, value.y)
        elif base == "ranges":
            out[field] = tuple(sorted(((r.start.x, r.start.y), (r.end.x, r.end.y)) for r in value.ranges()))
        elif base.startswith("enum:"):
            out[field] = value.name
        elif base == "unary":
            out[field] = (value.op_type.name, tuple(float(p) for p in value.params))
        else:
            out[field] = value
    return out


def _slot(args: list[Any], kwargs: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if name.isdigit() and int(name) < len(args):
            return args[int(name)]
        if name in kwargs:
            return kwargs[name]
    return None


def _memory_config(value: Any) -> dict[str, Any]:
    if isinstance(value, dict) and isinstance(value.get("tensor"), dict):
        return value["tensor"].get("memory_config") or {}
    return {}
