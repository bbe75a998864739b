"""An independent reading of tt-metal's rules, for contract tests (never imported by sweepctl).

Written from what tt-metal's own code does, not from sweepctl's modules, so a test comparing the
two catches a drift on either side:

* `config_hash`: model_tracer/generic_ops_tracer.py `_compute_config_hash` and its
  `_normalize_for_hash` (deep copy, normalise in place, sha256 of the sorted JSON);
* `master_from_trace_dir`: what `generic_ops_tracer.py --load DIR` writes into an empty master:
  `_trace_metadata.json`, the per-call cleaning, dedup on the arguments, `update_master_file`,
  then the shard-spec and infinity fix-ups it applies to the file;
* `loader_rows`: tests/sweep_framework/master_config_loader_v2.py — which configurations and
  executions become rows (`_normalize_configs`), what is a tensor (`type == "ttnn.Tensor"` only),
  its defaults (source "unknown", machine_info None, dtype bfloat16, layout TILE, DRAM memory), and
  the keys of each generated vector (`_get_generic_parameters`). ttnn objects are stood for by
  plain tuples naming what the loader would build.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
from typing import Any

# --- config_hash -------------------------------------------------------------------------------

_ADDR = re.compile(r" at 0x[0-9a-fA-F]+")


def _normalize_in_place(obj: Any) -> None:
    if isinstance(obj, dict):
        if "hash" in obj and isinstance(obj["hash"], int):
            del obj["hash"]
        if "shard_spec" in obj and obj["shard_spec"] is None:
            obj["shard_spec"] = "None"
        for key in list(obj):
            if isinstance(obj[key], str):
                obj[key] = _ADDR.sub("", obj[key])
            else:
                _normalize_in_place(obj[key])
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            if isinstance(item, str):
                obj[i] = _ADDR.sub("", item)
            else:
                _normalize_in_place(item)


def _hardware_and_mesh(machine_info: Any) -> tuple[Any, Any]:
    hardware = None
    if machine_info and machine_info.get("board_type"):
        series = machine_info.get("device_series")
        if isinstance(series, list):
            series = series[0] if series else None
        hardware = (machine_info["board_type"], series, machine_info.get("card_count", 1))
    mesh = None
    placements = (machine_info or {}).get("tensor_placements") or []
    if placements and placements[0].get("mesh_device_shape"):
        first = placements[0]
        shape = first["mesh_device_shape"]
        shape = json.loads(shape) if isinstance(shape, str) else shape
        found = re.search(r"PlacementShard\((\d+)\)", first.get("placement", ""))
        dim = int(found.group(1)) if found else None
        mesh = {"mesh_shape": shape, "placement_type": "shard" if dim is not None else "replicate", "shard_dim": dim}
    return hardware, mesh


def config_hash(op: str, arguments: Any, machine_info: Any, normalize: bool = True) -> str:
    """`normalize=False`: the hash stores written before tt-metal normalised (the legacy version)."""
    args = copy.deepcopy(arguments)
    if normalize:
        _normalize_in_place(args)
    hardware, mesh = _hardware_and_mesh(machine_info)
    doc = {"operation": op, "arguments": args, "hardware": hardware, "mesh": mesh}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


# --- generic_ops_tracer.py --load -------------------------------------------------------------

_EXCLUDED_OPS = {
    "ttnn.allocate_tensor_on_device", "ttnn.deallocate", "ttnn.move", "ttnn.reallocate",
    "ttnn.copy_host_to_device_tensor", "ttnn.copy_device_to_host_tensor", "ttnn.to_device", "ttnn.to_dtype",
    "ttnn.to_layout", "ttnn.to_memory_config", "ttnn.to_torch", "ttnn.from_device", "ttnn.from_torch", "ttnn.view",
    "ttnn.dump_tensor", "ttnn.load_tensor", "ttnn.as_tensor", "ttnn.unary_chain",
    "ttnn.pearson_correlation_coefficient", "ttnn.dram_prefetcher", "ttnn.complex_tensor", "ttnn.prim.binary",
}  # fmt: skip


def _int_seq(value: Any) -> list[int] | None:
    if isinstance(value, str):
        value = re.findall(r"-?\d+", value)
    if isinstance(value, (list, tuple)) and value:
        try:
            return [int(v) for v in value]
        except (TypeError, ValueError):
            return None
    return None


def _mesh_shape(shape: Any, distribution: Any, ids: Any) -> list[int] | None:
    s, d = _int_seq(shape), _int_seq(distribution)
    if s and len(s) == 2 and min(s) > 0:
        return s
    if d and len(d) == 2 and min(d) > 0:
        return d
    if d and len(d) == 1 and d[0] > 0:
        return [1, d[0]]
    n = len(ids) if ids else (math.prod(s) if s else (math.prod(d) if d else None))
    return [1, n] if n else None


def _clean(value: Any, mesh_ref: list) -> Any:
    if isinstance(value, list):
        return [_clean(v, mesh_ref) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    mesh = value.get("mesh_device") if isinstance(value.get("mesh_device"), dict) else None
    if mesh:
        shape = _mesh_shape(mesh.get("shape"), mesh.get("distribution_shape"), mesh.get("device_ids"))
        ids = mesh.get("device_ids") or []
        count = len(ids) if ids else (math.prod(shape) if shape else None)
        facts = {k: v for k, v in (("device_ids", ids), ("device_count", count), ("mesh_device_shape", shape)) if v}
        if mesh_ref[0] is None and facts:
            mesh_ref[0] = facts
        for key, item in value.items():
            if key != "mesh_device":
                out[key] = _clean(item, mesh_ref)
        if mesh.get("placements"):
            out["tensor_placement"] = {
                "placement": str(mesh["placements"]),
                "distribution_shape": str(mesh.get("distribution_shape", [])),
                "mesh_device_shape": str(shape or mesh.get("shape", []) or []),
            }
    else:
        for key, item in value.items():
            out[key] = _clean(item, mesh_ref)
    if "shape" in out and "original_shape" in out and out["shape"] == out["original_shape"]:
        del out["shape"]
    if "dtype" in out and "original_dtype" in out and out["dtype"] == out["original_dtype"]:
        del out["dtype"]
    return out


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return _ADDR.sub("", obj) if isinstance(obj, str) else obj


def _none_shard_specs(obj: Any) -> None:
    if isinstance(obj, dict):
        if obj.get("shard_spec") == "None":
            obj["shard_spec"] = None
        for item in obj.values():
            _none_shard_specs(item)
    elif isinstance(obj, list):
        for item in obj:
            _none_shard_specs(item)


def master_from_trace_dir(directory: str, local_machine: Any = None, base_dir: str | None = None) -> dict:
    """The master tt-metal's tracer writes from `directory` into an empty file (`local_machine`: what
    its get_machine_info() returns on the importing host; None without tt-smi)."""
    names = sorted(f for f in os.listdir(directory) if f.endswith(".json") and not f.startswith("_trace_"))
    machine_info, trace_uid = local_machine, None
    meta_path = os.path.join(directory, "_trace_metadata.json")
    if os.path.exists(meta_path):
        with open(meta_path) as handle:
            meta = json.load(handle)
        source = meta.get("test_source", os.path.basename(os.path.abspath(directory)))
        if base_dir and os.path.isabs(source) and base_dir in source:
            source = os.path.relpath(source, base_dir)
        tags = [f"[{k}:{meta[k]}]" for k in ("HF_MODEL", "LLAMA_DIR") if k in meta]
        if tags:
            source = f"{source} {' '.join(tags)}"
        if "machine_info" in meta:
            machine_info = meta["machine_info"]
            trace_uid = meta.get("trace_uid", trace_uid)
    else:
        source = os.path.basename(os.path.abspath(directory))
    operations = []
    for name in names:
        with open(os.path.join(directory, name)) as handle:
            data = json.load(handle)
        if data.get("operation_name", "").replace("::", ".") in _EXCLUDED_OPS:
            continue
        mesh_ref: list = [None]
        arguments = {}
        for arg in data.get("args", []):
            arguments[f"arg{arg.get('position', 0)}"] = _clean(arg.get("value", {}), mesh_ref)
        for key, value in data.get("kwargs", {}).items():
            if key not in ("multi_device_global_semaphore", "barrier_semaphore"):
                arguments[key] = _clean(value, mesh_ref)
        info = dict(machine_info or {})
        info.update(mesh_ref[0] or {})
        operations.append({"operation": data["operation_name"], "arguments": _strip(arguments), "machine_info": info})
    counts: dict[str, int] = {}
    unique: dict[str, dict] = {}
    for op in operations:
        signature = op["operation"] + json.dumps(op["arguments"], sort_keys=True, default=str)
        counts[signature] = counts.get(signature, 0) + 1
        unique.setdefault(signature, op)
    master: dict[str, Any] = {"operations": {}}
    next_id = 1
    for signature, op in unique.items():
        _none_shard_specs(op["arguments"])
        master["operations"].setdefault(op["operation"], {"configurations": []})["configurations"].append(
            {
                "config_id": next_id,
                "config_hash": config_hash(op["operation"], op["arguments"], op["machine_info"]),
                "arguments": op["arguments"],
                "executions": [
                    {"source": source, "machine_info": op["machine_info"], "count": counts[signature],
                     "trace_uid": trace_uid}
                ],
            }
        )  # fmt: skip
        next_id += 1
    text = json.dumps(master, indent=2, sort_keys=True, default=str)
    text = re.sub(r":\s*-Infinity\b", ': "-inf"', text)
    text = re.sub(r":\s*Infinity\b", ': "inf"', text)
    text = re.sub(r":\s*NaN\b", ': "nan"', text)
    return json.loads(text)


# --- master_config_loader_v2 --------------------------------------------------------------------

_DTYPES = {"BFLOAT16", "FLOAT32", "INT32", "UINT32", "BFLOAT8_B", "BFLOAT4_B", "UINT16", "UINT8"}
DRAM = ("MemoryConfig", "INTERLEAVED", "DRAM", None)


class Skipped(Exception):
    """The loader drops the whole config (it logs and continues)."""


def _dtype(text: Any) -> tuple[str, str]:
    """parse_dtype: only `DataType::X` / `DataType.X` of its eight dtypes; anything else bfloat16."""
    if isinstance(text, str):
        for sep in ("::", "."):
            if text.startswith("DataType" + sep) and text.split(sep, 1)[1] in _DTYPES:
                return ("dtype", text.split(sep, 1)[1])
    return ("dtype", "BFLOAT16")


def _layout(text: Any) -> tuple[str, str]:
    text = str(text)
    return ("layout", "ROW_MAJOR" if "TILE" not in text and "ROW_MAJOR" in text else "TILE")


def _memory_config(mc: Any) -> tuple:
    """parse_memory_config; raises ValueError where it does."""
    if not mc or not isinstance(mc, dict):
        return DRAM
    if isinstance(mc.get("data"), dict) and "buffer_type" not in mc:
        mc = mc["data"]
    buffer, layout = mc.get("buffer_type"), mc.get("memory_layout")
    if not buffer or not layout:
        raise ValueError("missing buffer_type or memory_layout")
    if "DRAM" in buffer:
        buffer = "DRAM"
    elif "L1" in buffer:
        buffer = "L1"
    else:
        raise ValueError(f"unknown buffer_type {buffer}")
    if "INTERLEAVED" in layout:
        return ("MemoryConfig", "INTERLEAVED", buffer, None)
    if "SHARDED" not in layout:
        raise ValueError(f"unknown memory_layout {layout}")
    kind = next((k for k in ("WIDTH_SHARDED", "HEIGHT_SHARDED", "BLOCK_SHARDED") if k in layout), None)
    if kind is None:
        raise ValueError(f"unknown sharded layout {layout}")
    spec = mc.get("shard_spec")
    if spec == "None" or not spec or not isinstance(spec, dict):
        return ("MemoryConfig", kind, buffer, None)
    grid, shape, orientation = spec.get("grid"), spec.get("shape"), spec.get("orientation")
    if not grid or not shape or orientation is None:
        return ("MemoryConfig", kind, buffer, None)
    try:
        ranges = set()
        for r in grid:
            start, end = r.get("start"), r.get("end")
            if not start or not end or not {"x", "y"} <= set(start) or not {"x", "y"} <= set(end):
                raise ValueError("bad range")
            ranges.add((start["x"], start["y"], end["x"], end["y"]))
        if str(orientation) in ("COL_MAJOR", "1"):
            orient = "COL_MAJOR"
        elif str(orientation) in ("ROW_MAJOR", "0"):
            orient = "ROW_MAJOR"
        else:
            raise ValueError("bad orientation")
    except (ValueError, KeyError, TypeError, AttributeError):
        return ("MemoryConfig", kind, buffer, None)
    return ("MemoryConfig", kind, buffer, (frozenset(ranges), tuple(shape), orient))


def _special_float(value: Any) -> Any:
    table = {"inf": math.inf, "Infinity": math.inf, "-inf": -math.inf, "-Infinity": -math.inf, "nan": "NaN-float"}
    if isinstance(value, str) and value in table:
        return table[value]
    if value == "NaN":
        return "NaN-float"
    return value


def _enum(value: Any) -> Any:
    """parse_enum_value: the enum dicts it turns into ttnn objects; everything else unchanged."""
    if not isinstance(value, dict):
        return value
    kind, text = value.get("type"), str(value.get("repr", ""))
    if kind == "DataType":
        return _dtype(value.get("repr", ""))
    if kind == "Layout":
        return _layout(value.get("repr", ""))
    if kind == "Topology":
        return ("Topology", "Ring" if "Ring" in str(value.get("repr", value.get("value", ""))) else "Linear")
    if kind == "SigmoidMode":
        return ("SigmoidMode", "AccurateWithFastExp" if "AccurateWithFastExp" in text else
                "Accurate" if "Accurate" in text else "Fast")  # fmt: skip
    if kind == "TensorMemoryLayout":
        found = next((k for k in ("HEIGHT_SHARDED", "WIDTH_SHARDED", "BLOCK_SHARDED") if k in text), "INTERLEAVED")
        return ("TensorMemoryLayout", found)
    if kind == "ShardOrientation":
        return ("ShardOrientation", "COL_MAJOR" if "COL_MAJOR" in text else "ROW_MAJOR")
    return value


def _tensor(value: Any, legacy: bool) -> dict | None:
    """_extract_tensor_config (v2 reads only `type == "ttnn.Tensor"`). `legacy`: also the graph
    tracer's `{"Tensor": {tensor_spec}}` the way the loader's old extract_tensor_config read it."""
    if not isinstance(value, dict):
        return None
    if value.get("type") == "ttnn.Tensor":
        return {
            "shape": value.get("original_shape", value.get("shape", [])),
            "dtype": value.get("original_dtype", value.get("dtype", "")),
            "layout": value.get("layout", ""),
            "memory_config": value.get("memory_config", {}),
            "storage_type": value.get("storage_type", "StorageType.DEVICE"),
            "tensor_placement": value.get("tensor_placement"),
        }
    if legacy and set(value) == {"Tensor"}:
        data = value["Tensor"]
        spec = data.get("tensor_spec", {})
        layout = spec.get("tensor_layout", {})
        if not spec.get("logical_shape"):
            return None
        page = (layout.get("page_config") or {}).get("config") or {}
        return {
            "shape": spec["logical_shape"],
            "dtype": layout.get("dtype", "DataType::BFLOAT16"),
            "layout": data.get("layout") or ("ROW_MAJOR" if "row_major" in page else "TILE"),
            "memory_config": _legacy_memory_config(layout.get("memory_config", {})),
            "storage_type": data.get("storage_type") or "StorageType::DEVICE",
            "tensor_placement": data.get("tensor_placement"),
        }
    return None


def _legacy_memory_config(mc: Any) -> Any:
    """The graph tracer's shard spec (`shard_shape`, a grid of corner pairs) in the keys the loader
    reads, so a legacy original can be compared with its current-dialect rewrite."""
    spec = mc.get("shard_spec") if isinstance(mc, dict) else None
    if not isinstance(spec, dict):
        return mc
    grid = spec.get("grid") or []
    if grid and all("x" in c for c in grid):
        grid = [{"start": grid[i], "end": grid[i + 1]} for i in range(0, len(grid) - 1, 2)]
    orientation = str(spec.get("orientation", "")).split("::")[-1].split(".")[-1]
    return {**mc, "shard_spec": {"grid": grid, "shape": spec.get("shape", spec.get("shard_shape")),
                                 "orientation": orientation}}  # fmt: skip


def _executions(config: Any) -> list[tuple[Any, Any, Any, Any]]:
    """_normalize_configs: (arguments, source, machine_info, config_hash) per execution."""
    if isinstance(config, list):
        return [(config, "unknown", None, None)]
    if not isinstance(config, dict) or "arguments" not in config:
        return [([config], "unknown", None, None)]
    args, digest = config["arguments"], config.get("config_hash")
    if "executions" in config:
        return [(args, e.get("source", "unknown"), e.get("machine_info"), digest) for e in config["executions"]]
    if "contexts" in config:
        out = []
        for ctx in config["contexts"]:
            sources = ctx.get("source", ["unknown"])
            source = sources[0] if isinstance(sources, list) and sources else "unknown"
            out.append((args, source, ctx.get("machine_info"), digest))
        return out
    return [(args, config.get("source", "unknown"), config.get("machine_info"), digest)]


def _row(args: Any, source: Any, machine_info: Any, digest: Any, legacy: bool) -> dict:
    if isinstance(args, list):
        merged: dict = {}
        for item in args:
            if isinstance(item, dict):
                merged.update(item)
        args = merged
    positional = {k: v for k, v in args.items() if k.startswith("arg") and k[3:].isdigit()}
    named = {k: v for k, v in args.items() if k not in positional}
    row: dict[str, Any] = {}
    tensors = []
    try:
        index = 0
        while f"arg{index}" in positional:
            value = positional[f"arg{index}"]
            tensor = _tensor(value, legacy)
            if tensor is not None:
                tensors.append(tensor)
            else:
                row[f"arg{index}"] = _special_float(value)
            index += 1
        for key, value in named.items():
            tensor = _tensor(value, legacy)
            if tensor is not None:
                row[f"{key}_shape"] = tuple(tensor["shape"])
                row[f"{key}_dtype"] = _dtype(tensor["dtype"])
                row[f"{key}_layout"] = _layout(tensor["layout"])
                row[f"{key}_memory_config"] = _memory_config(tensor["memory_config"])
                row[f"{key}_tensor_placement"] = tensor["tensor_placement"]
            elif isinstance(value, dict) and "memory_layout" in value and "buffer_type" in value:
                try:
                    row[key] = _memory_config(value)
                except ValueError:
                    row[key] = None
            else:
                parsed = _enum(value)
                row[key] = _special_float(value) if parsed == value else parsed
        parsed_tensors = [(t, _memory_config(t["memory_config"])) for t in tensors]
    except Exception as exc:  # the loader skips the config
        raise Skipped(str(exc)) from None
    for i, (tensor, memory) in enumerate(parsed_tensors):
        suffix = chr(97 + i)
        row[f"input_{suffix}_shape"] = tuple(tensor["shape"])
        row[f"input_{suffix}_dtype"] = _dtype(tensor["dtype"])
        row[f"input_{suffix}_layout"] = _layout(tensor["layout"])
        row[f"input_{suffix}_memory_config"] = memory
        row[f"input_{suffix}_tensor_placement"] = tensor.get("tensor_placement")
        if tensor.get("storage_type") and "HOST" in str(tensor["storage_type"]):
            row[f"input_{suffix}_storage_type"] = tensor["storage_type"]
    if parsed_tensors and "output_memory_config" not in row:
        row["output_memory_config"] = row["memory_config"] if "memory_config" in row else parsed_tensors[0][1]
    row["traced_source"] = source
    row["traced_machine_info"] = machine_info
    row["config_hash"] = digest
    return row


def loader_rows(master: dict, op: str, legacy: bool = False) -> list[dict]:
    """Every generated vector of `op` (exact key in `operations`), in the loader's order; configs
    it would skip are marked `{"skipped": reason}` so a skip on one side only shows up."""
    rows = []
    for config in master["operations"].get(op, {}).get("configurations", []):
        for args, source, machine_info, digest in _executions(config):
            try:
                rows.append(_row(args, source, machine_info, digest, legacy))
            except Skipped as exc:
                rows.append({"skipped": str(exc)})
    return rows
