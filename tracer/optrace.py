"""Reader for ttnn's `operation_tracer` output: one JSON file per op call
(`{counter}_{op}_{timestamp}.json` with `operation_name`, `args[{position, value}]`, `kwargs`),
plus the `_trace_metadata.json` tt-metal's generic_ops_tracer writes next to them.

Calls become current-dialect entries the way tt-metal's tracer (`--load`) cleans them:
infrastructure ops dropped; run-time handles (`multi_device_global_semaphore`,
`barrier_semaphore`) dropped; `" at 0x…"` addresses stripped; a tensor's `mesh_device` moved into
the execution's machine info and replaced by a per-tensor `tensor_placement` of strings; a
`shape`/`dtype` equal to `original_shape`/`original_dtype` dropped; a `"None"` shard spec written
as null; tensor `values` (and the host `dtype` they were serialised in) kept when traced.
Identical calls collapse into one entry whose count is the number of calls. Each entry carries
the current config_hash, computed as tt-metal does: before special floats become the strings
"inf"/"-inf"/"nan" the store holds.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

from tracer.confighash import config_hash, strip_addresses
from tracer.cppjson import parse_int_list
from tracer.entry import TracedEntry, normalize_execution
from tracer.errors import InputError
from tracer.machine import detect_machine_info
from tracer.master import load_json
from tracer.opnames import canonical_op_name

# Infrastructure ops, never sweep targets (tt-metal's exclusion set, anchor study §4.1).
EXCLUDED_OPS = frozenset(
    "ttnn." + name
    for name in (
        "allocate_tensor_on_device deallocate move reallocate copy_host_to_device_tensor "
        "copy_device_to_host_tensor to_device to_dtype to_layout to_memory_config to_torch from_device "
        "from_torch view dump_tensor load_tensor as_tensor unary_chain pearson_correlation_coefficient "
        "dram_prefetcher complex_tensor prim.binary"
    ).split()
)
EXCLUDED_KWARGS = frozenset({"multi_device_global_semaphore", "barrier_semaphore"})  # run-time handles
STATUS_FILE = "_status.json"
METADATA_FILE = "_trace_metadata.json"
TT_METAL_HOME = "TT_METAL_HOME"


def is_excluded(op: str) -> bool:
    return op in EXCLUDED_OPS or op.startswith(("ttnn.prim.example", "ttnn.composite_example"))


def is_call_record(data: Any) -> bool:
    return isinstance(data, dict) and "operation_name" in data and "args" in data


@dataclass
class TraceDirMeta:
    source: str
    machine_info: dict[str, Any] | None
    trace_uid: str | None


def trace_dir_metadata(directory: str) -> TraceDirMeta:
    """Where a trace directory came from, as tt-metal's `--load` reads it: `test_source` (relative
    to $TT_METAL_HOME when inside it) with `[HF_MODEL:…]`/`[LLAMA_DIR:…]` tags, the traced
    `machine_info` and `trace_uid`. Without the file: the directory's name, and this host's machine."""
    name = os.path.basename(os.path.abspath(directory))
    path = os.path.join(directory, METADATA_FILE)
    if not os.path.exists(path):
        return TraceDirMeta(name, detect_machine_info(), None)
    meta = load_json(path)
    if not isinstance(meta, dict):
        raise InputError(path, "expected an object with test_source, machine_info, trace_uid")
    source = meta.get("test_source") or name
    if not isinstance(source, str):
        raise InputError(f"{path}: test_source", "expected a string")
    home = os.environ.get(TT_METAL_HOME)
    if home and os.path.isabs(source) and os.path.commonpath([os.path.abspath(home), source]) == os.path.abspath(home):
        source = os.path.relpath(source, home)
    tags = [f"[{key}:{meta[key]}]" for key in ("HF_MODEL", "LLAMA_DIR") if meta.get(key)]
    if tags:
        source = f"{source} {' '.join(tags)}"
    info = meta["machine_info"] if "machine_info" in meta else detect_machine_info()
    if isinstance(info, list):
        info = info[0] if info else None
    if info is not None and not isinstance(info, dict):
        raise InputError(f"{path}: machine_info", "expected an object")
    uid = meta.get("trace_uid")
    return TraceDirMeta(source, info, uid if isinstance(uid, str) and uid else None)


def _ints(value: Any) -> list[int] | None:
    """A shape-like value as a non-empty int list, or None (tt-metal's mesh metadata parsing)."""
    parsed = parse_int_list(value)
    return parsed or None


def _mesh_facts(device: dict[str, Any]) -> tuple[dict[str, Any], list[int] | None]:
    """(machine-level facts, inferred 2-D mesh shape) of a tensor's serialised mesh device, inferred
    as tt-metal's mesh metadata does: its own 2-D shape, else a 2-D distribution shape, else one row
    of the 1-D distribution, else one row of as many devices as it names."""
    shape, distribution = _ints(device.get("shape")), _ints(device.get("distribution_shape"))
    ids = device.get("device_ids") if isinstance(device.get("device_ids"), list) and device.get("device_ids") else None
    mesh: list[int] | None = None
    if shape and len(shape) == 2 and all(d > 0 for d in shape):
        mesh = shape
    elif distribution and len(distribution) == 2 and all(d > 0 for d in distribution):
        mesh = distribution
    elif distribution and len(distribution) == 1 and distribution[0] > 0:
        mesh = [1, distribution[0]]
    else:
        found = len(ids) if ids else math.prod(shape) if shape else math.prod(distribution) if distribution else 0
        mesh = [1, found] if found > 0 else None
    count = len(ids) if ids else math.prod(mesh) if mesh else math.prod(distribution) if distribution else None
    facts: dict[str, Any] = {}
    if ids:
        facts["device_ids"] = ids
    if count:
        facts["device_count"] = count
    if mesh:
        facts["mesh_device_shape"] = mesh
    return facts, mesh


def _clean(value: Any, mesh: list[dict[str, Any]], with_values: bool) -> Any:
    if isinstance(value, str):
        return strip_addresses(value)
    if isinstance(value, list):
        return [_clean(v, mesh, with_values) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    device = value.get("mesh_device")
    device = device if isinstance(device, dict) and device else None
    for key, item in value.items():
        if device is not None and key == "mesh_device":
            continue
        out[key] = _clean(item, mesh, with_values)
    if device is not None:
        facts, inferred = _mesh_facts(device)
        if not mesh and facts:
            mesh.append(facts)
        placements = device.get("placements")
        if placements:
            out["tensor_placement"] = {
                "placement": str(placements),
                "distribution_shape": str(device.get("distribution_shape", [])),
                "mesh_device_shape": str(inferred or device.get("shape") or []),
            }
    if "shape" in out and "original_shape" in out and out["shape"] == out["original_shape"]:
        del out["shape"]
    if "dtype" in out and "original_dtype" in out and out["dtype"] == out["original_dtype"]:
        del out["dtype"]
    if out.get("type") in ("ttnn.Tensor", "torch.Tensor") and not with_values and out.pop("values", None) is not None:
        out.pop("dtype", None)  # the dtype of the serialised values, not of the tensor
    if out.get("shard_spec") == "None":
        out["shard_spec"] = None
    return out


def _stored_floats(value: Any) -> Any:
    """Special floats as the strings tt-metal's store holds them as."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list):
        return [_stored_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: _stored_floats(v) for k, v in value.items()}
    return value


def call_arguments(record: dict[str, Any], where: str, with_values: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(current-dialect arguments, mesh facts for machine info) of one traced call."""
    args = record.get("args")
    kwargs = record.get("kwargs") or {}
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise InputError(where, "operation_tracer record needs args as a list and kwargs as an object")
    mesh: list[dict[str, Any]] = []
    arguments: dict[str, Any] = {}
    for index, item in enumerate(args):
        if not isinstance(item, dict) or "value" not in item:
            raise InputError(f"{where}: args[{index}]", 'expected {"position", "value"}')
        arguments[f"arg{item.get('position', index)}"] = _clean(item["value"], mesh, with_values)
    for name, value in kwargs.items():
        if name not in EXCLUDED_KWARGS:
            arguments[name] = _clean(value, mesh, with_values)
    return arguments, (mesh[0] if mesh else {})


def read_trace_dir(
    directory: str,
    source: str | None,
    machine_info: dict[str, Any] | None,
    trace_uid: str | None,
    with_values: bool = False,
) -> list[TracedEntry]:
    """Every kept call of one trace directory, identical calls merged with their count."""
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json") and n != STATUS_FILE)
    except FileNotFoundError:
        raise InputError(directory, "no such directory") from None
    merged: dict[str, TracedEntry] = {}
    for name in names:
        path = os.path.join(directory, name)
        record = load_json(path, special_floats=True)
        if not is_call_record(record):
            continue  # metadata sidecars and other files written next to the traces
        op = canonical_op_name(str(record["operation_name"]))
        if is_excluded(op):
            continue
        arguments, mesh = call_arguments(record, path, with_values)
        info = {**(machine_info or {}), **mesh}  # the traced mesh beats the profile's
        execution = normalize_execution({"source": source, "machine_info": info or None, "count": 1}, trace_uid)
        digest = config_hash(op, arguments, execution.get("machine_info"))  # the machine as stored
        arguments = _stored_floats(arguments)
        key = json.dumps([op, arguments], sort_keys=True, default=str)
        if key in merged:
            merged[key].executions[0]["count"] += 1
            continue
        extras = {"sweep_source_hash": record["sweep_source_hash"]} if record.get("sweep_source_hash") else {}
        merged[key] = TracedEntry(op, arguments, [execution], digest, extras=extras)
    return list(merged.values())
