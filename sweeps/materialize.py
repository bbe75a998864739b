"""From a vector to torch data, ttnn objects and a golden: every step before the device call,
shared by the ttnn device backend and the emulated backend (so the device path's preparation
is the tested one).

Runs only in executor processes (imports torch; takes the ttnn module as an argument). Input
data is seeded from the vector id, so a vector gets the same inputs on every worker and rerun.
Traced shapes are per-device shapes (what one chip holds); the device backend tiles them to the
mesh along the placement's shard dims.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from sweeps.catalogue import OpDef
from sweeps.memconfig import to_ttnn
from sweeps.vector import tensor_slots

BLOCK_FLOATS = frozenset({"BFLOAT8_B", "BFLOAT4_B"})
INTEGER_DTYPES = {
    "UINT32": torch.int64,
    "INT32": torch.int32,
    "UINT16": torch.int32,
    "UINT8": torch.uint8,
    "INT8": torch.int8,
}
_INT_HIGH = {"UINT8": 16, "INT8": 16}


@dataclass
class Prepared:
    """A vector's inputs in fp32 (for the reference golden) and as traced dtypes round them."""

    args: list[Any]
    kwargs: dict[str, Any]
    tensors: dict[str, dict[str, Any]]  # slot -> canonical tensor description
    originals: dict[str, torch.Tensor]  # slot -> generated fp32 / integer data (per device)
    output_dtype: str
    dtypes: list[str]  # every tensor dtype of the vector, output included
    device_inputs: list[torch.Tensor] = field(default_factory=list)  # collectives: one per device


def seed_of(vector: dict[str, Any]) -> int:
    return int(vector["id"][:15], 16)


def generate(
    tensor: dict[str, Any], kind: str, gen: torch.Generator, refs: list[list[int]] | None = None
) -> torch.Tensor:
    """Input data for one tensor: fp32 for float dtypes, integers for integer dtypes. `refs`: the
    shapes of the tensors the kind names (sweeps.catalogue data kinds), in the kind's order."""
    shape = list(tensor["shape"])
    dtype = tensor["dtype"]
    ints = INTEGER_DTYPES.get(dtype, torch.int64)
    name = kind.split(":", 1)[0]
    refs = refs or []
    if name == "index":  # rows of the named tensor (its second-to-last dim)
        return torch.randint(0, max(1, refs[0][-2] if refs and refs[0] else 1), shape, generator=gen, dtype=ints)
    if name == "page_table":  # distinct pages of the named paged cache [pages, heads, block, dim]
        pages, count = max(1, refs[0][0]), math.prod(shape)
        table = torch.randperm(pages, generator=gen)[:count] if count <= pages else torch.randint(0, pages, (count,))
        return table.reshape(shape).to(ints)
    if name == "position":  # token positions the page table covers (the cache's own rows without one)
        table, cache = refs
        return torch.randint(0, max(1, (table[-1] if table else 1) * cache[-2]), shape, generator=gen, dtype=ints)
    if name == "rope_trans_mat":  # per 32x32 block, x @ m turns each pair (a, b) into (-b, a)
        block = torch.zeros(32, 32)
        block[torch.arange(0, 32, 2), torch.arange(1, 32, 2)] = 1.0
        block[torch.arange(1, 32, 2), torch.arange(0, 32, 2)] = -1.0
        return block.repeat(math.prod(shape[:-2]) * (shape[-2] // 32), 1).reshape(shape)
    if kind in ("integral", "integral_positive"):  # exact in every float dtype: comparisons, argmax, remainder
        return torch.randint(1 if kind == "integral_positive" else -16, 17, shape, generator=gen).to(
            INTEGER_DTYPES.get(dtype, torch.float32)
        )
    if kind == "bool":
        return torch.randint(0, 2, shape, generator=gen).to(torch.float32)
    if dtype in INTEGER_DTYPES:
        return torch.randint(0, _INT_HIGH.get(dtype, 100), shape, generator=gen, dtype=INTEGER_DTYPES[dtype])
    if kind == "positive":
        return torch.rand(shape, generator=gen) * 1.5 + 0.5
    return torch.randn(shape, generator=gen)


def referred_shapes(kind: str, tensors: dict[str, dict[str, Any]]) -> list[list[int]]:
    """The shapes of the slots a data kind names ("page_table:1|input_tensor_k" -> [cache shape]),
    [] for a slot the call does not have (a position kind's page table when the cache is not paged)."""
    shapes = []
    for options in kind.split(":")[1:]:
        found = next((tensors[slot]["shape"] for slot in options.split("|") if slot in tensors), None)
        shapes.append(list(found) if found is not None else [])
    return shapes


def quantize(ttnn: Any, data: torch.Tensor, dtype: str) -> torch.Tensor:
    """`data` as a ttnn tensor of `dtype` would hold it, through ttnn's own host conversion
    (real bfloat8_b / bfloat4_b block rounding). Returned as fp32 (or integers)."""
    if not data.is_floating_point():
        return data
    if dtype == "FP8_E4M3":  # ttnn's to_torch does not support FP8 on one device: round in torch
        return data.to(torch.float8_e4m3fn).to(torch.float32)
    if dtype in INTEGER_DTYPES:
        return data.to(torch.int64)
    layout = ttnn.TILE_LAYOUT if dtype in BLOCK_FLOATS else ttnn.ROW_MAJOR_LAYOUT
    host = ttnn.from_torch(data.to(torch.float32), dtype=ttnn.DataType[dtype], layout=layout)
    return ttnn.to_torch(host).to(torch.float32)


def output_dtype(vector: dict[str, Any], tensors: dict[str, dict[str, Any]]) -> str:
    """The dtype the op writes: an explicit dtype argument, else the first float input's
    (embedding's indices are UINT32, its output has the weight's dtype), else the first input's."""
    for name in ("dtype", "output_dtype"):
        value = vector["kwargs"].get(name)
        if _is_dtype(value):
            return value["value"]
    for value in vector["inputs"]:
        if _is_dtype(value):
            return value["value"]
    dtypes = [t["dtype"] for t in tensors.values()]
    floats = [d for d in dtypes if d not in INTEGER_DTYPES]
    return (floats or dtypes or ["BFLOAT16"])[0]


def _is_dtype(value: Any) -> bool:
    return isinstance(value, dict) and value.get("enum") == "DataType" and isinstance(value.get("value"), str)


def ring_size(vector: dict[str, Any]) -> int:
    """Devices a collective spans: the mesh dim named by cluster_axis, else the whole mesh."""
    rows, cols = (list(vector["mesh_shape"]) + [1, 1])[:2]
    axis = vector["kwargs"].get("cluster_axis")
    if axis == 0:
        return rows
    if axis == 1:
        return cols
    return rows * cols


def to_ttnn_value(ttnn: Any, value: Any, resolve: Callable[[dict[str, Any]], Any]) -> Any:
    """A canonical non-tensor value as the ttnn call takes it: enums by name, memory configs rebuilt
    exactly; devices and run-time objects (semaphores) come from `resolve` (None when emulated)."""
    if isinstance(value, dict):
        if "enum" in value:
            enum = getattr(ttnn, value["enum"], None)
            try:
                return enum[value["value"]] if enum is not None else value["value"]
            except (KeyError, TypeError):
                return value["value"]
        if "memory_config" in value and len(value) == 1:
            return None if value["memory_config"] is None else to_ttnn(ttnn, value["memory_config"])
        if "device" in value or "runtime_object" in value:
            return resolve(value)
        return {k: to_ttnn_value(ttnn, v, resolve) for k, v in value.items()}
    if isinstance(value, list):
        return [to_ttnn_value(ttnn, v, resolve) for v in value]
    return value


def substitute(ttnn: Any, vector: dict[str, Any], tensor_values: dict[str, Any], resolve) -> tuple[list, dict]:
    """The call's args and kwargs with each tensor slot replaced by `tensor_values[slot]`."""

    def fill(slot: str, value: Any) -> Any:
        if isinstance(value, dict) and "tensor" in value:
            return tensor_values[slot]
        if isinstance(value, list) and any(isinstance(v, dict) and "tensor" in v for v in value):
            return [fill(f"{slot}.{i}", v) for i, v in enumerate(value)]
        return to_ttnn_value(ttnn, value, resolve)

    args = [fill(str(i), v) for i, v in enumerate(vector["inputs"])]
    kwargs = {k: fill(k, v) for k, v in vector["kwargs"].items()}
    return args, kwargs


def prepare(ttnn: Any, opdef: OpDef, vector: dict[str, Any]) -> Prepared:
    tensors = dict(tensor_slots(vector))
    gen = torch.Generator().manual_seed(seed_of(vector))
    originals: dict[str, torch.Tensor] = {}
    for slot, tensor in tensors.items():
        kind = opdef.data_kind(slot)
        originals[slot] = generate(tensor, kind, gen, referred_shapes(kind, tensors))
    out_dtype = output_dtype(vector, tensors)
    prepared = Prepared([], {}, tensors, originals, out_dtype, [t["dtype"] for t in tensors.values()] + [out_dtype])
    if opdef.collective and "0" in tensors:
        first = originals["0"]
        prepared.device_inputs = [first] + [generate(tensors["0"], "normal", gen) for _ in range(ring_size(vector) - 1)]
    return prepared


_GOLDENS: dict[str, Callable[..., Any]] = {}


def golden_function(ttnn: Any, opdef: OpDef) -> Callable[..., Any]:
    """The op's golden as (args, kwargs, ctx) -> torch: the catalogue's, else ttnn's own, called
    with only the kwargs its signature takes. Resolved once per op per process."""
    found = _GOLDENS.get(opdef.name)
    if found is None:
        resolved = _resolve_golden(ttnn, opdef)
        found = _GOLDENS[opdef.name] = lambda args, kwargs, ctx: resolved(*_copies(args, kwargs), ctx)
    return found


def _copies(args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """The call's arguments with every torch tensor copied: ttnn's goldens of in-place ops (fill_cache,
    update_cache, plus_one, eq_, layer_norm's residual add) write into their inputs, and the same
    inputs are rounded and sent to the op after the reference golden has run."""

    def copy(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.clone()
        if isinstance(value, list):
            return [copy(v) for v in value]
        return value

    return [copy(v) for v in args], {k: copy(v) for k, v in kwargs.items()}


def _resolve_golden(ttnn: Any, opdef: OpDef) -> Callable[..., Any]:
    if opdef.golden is not None:
        custom = opdef.golden
        return lambda args, kwargs, ctx: custom(ttnn, args, kwargs, ctx)
    target = ttnn
    for part in opdef.name.split(".")[1:]:
        target = getattr(target, part)
    golden = ttnn.get_golden_function(target)
    params = inspect.signature(golden).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return lambda args, kwargs, ctx: golden(*args, **kwargs)
    names = {p.name for p in params}
    return lambda args, kwargs, ctx: golden(*args, **{k: v for k, v in kwargs.items() if k in names})


def first_output(value: Any) -> torch.Tensor:
    """Ops returning several tensors (topk: values, indices) are judged on the first."""
    while isinstance(value, (tuple, list)):
        value = value[0]
    return value
