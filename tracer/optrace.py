"""Reader for ttnn's `operation_tracer` output: one JSON file per op call
(`{counter}_{op}_{timestamp}.json` with `operation_name`, `args[{position, value}]`, `kwargs`).

Calls become current-dialect entries the way tt-metal's tracer cleans them: infrastructure ops
dropped, tensor values dropped unless asked for, the mesh device moved out of the tensor into
the execution's machine info and replaced by a per-tensor `tensor_placement` of strings.
Identical calls collapse into one entry whose count is the number of calls.
"""

from __future__ import annotations

import json
import os
from typing import Any

from tracer.entry import TracedEntry, normalize_execution
from tracer.errors import InputError
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
STATUS_FILE = "_status.json"


def is_excluded(op: str) -> bool:
    return op in EXCLUDED_OPS or op.startswith(("ttnn.prim.example", "ttnn.composite_example"))


def is_call_record(data: Any) -> bool:
    return isinstance(data, dict) and "operation_name" in data and "args" in data


def _clean(value: Any, mesh: dict[str, Any], with_values: bool) -> Any:
    if isinstance(value, list):
        return [_clean(v, mesh, with_values) for v in value]
    if not isinstance(value, dict):
        return value
    if value.get("type") not in ("ttnn.Tensor", "torch.Tensor"):
        return {k: _clean(v, mesh, with_values) for k, v in value.items()}
    tensor = dict(value)
    if not with_values and tensor.pop("values", None) is not None:
        tensor.pop("dtype", None)  # the dtype of the serialised values, not of the tensor
    if tensor.get("shape") == tensor.get("original_shape"):
        tensor.pop("shape", None)
    if tensor.get("dtype") == tensor.get("original_dtype"):
        tensor.pop("dtype", None)
    device = tensor.pop("mesh_device", None)
    if isinstance(device, dict):
        if device.get("shape") is not None:
            mesh.setdefault("mesh_device_shape", device["shape"])
        if device.get("device_ids"):
            mesh.setdefault("device_ids", device["device_ids"])
        tensor["tensor_placement"] = {
            "placement": str(device.get("placements", [])),
            "distribution_shape": str(device.get("distribution_shape")),
            "mesh_device_shape": str(device.get("shape")),
        }
    return tensor


def call_arguments(record: dict[str, Any], where: str, with_values: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(current-dialect arguments, mesh facts for machine info) of one traced call."""
    args = record.get("args")
    kwargs = record.get("kwargs") or {}
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise InputError(where, "operation_tracer record needs args as a list and kwargs as an object")
    mesh: dict[str, Any] = {}
    arguments: dict[str, Any] = {}
    for index, item in enumerate(args):
        if not isinstance(item, dict) or "value" not in item:
            raise InputError(f"{where}: args[{index}]", 'expected {"position", "value"}')
        arguments[f"arg{item.get('position', index)}"] = _clean(item["value"], mesh, with_values)
    for name, value in kwargs.items():
        arguments[name] = _clean(value, mesh, with_values)
    return arguments, mesh


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
        record = load_json(path)
        if not is_call_record(record):
            continue  # metadata sidecars and other files written next to the traces
        op = canonical_op_name(str(record["operation_name"]))
        if is_excluded(op):
            continue
        arguments, mesh = call_arguments(record, path, with_values)
        key = json.dumps([op, arguments], sort_keys=True, default=str)
        if key in merged:
            merged[key].executions[0]["count"] += 1
            continue
        info = {**(machine_info or {}), **mesh}  # the traced mesh beats the profile's
        execution = normalize_execution({"source": source, "machine_info": info or None, "count": 1}, trace_uid)
        merged[key] = TracedEntry(op, arguments, [execution])
    return list(merged.values())
