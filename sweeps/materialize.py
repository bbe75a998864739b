"""From a vector to torch data, ttnn objects and a golden: every step before the device call,
shared by the ttnn device backend and the emulated backend (so the device path's preparation
is the tested one).

Runs only in executor processes (imports torch; takes the ttnn module as an argument). Input
data is seeded from what the tensor is (slot, shape, dtype, data kind), so a vector gets the same
inputs on every worker and rerun, and vectors that share a large tensor (the 128 paged_fill_cache
configs of one cache) share it: an executor keeps recent large inputs and their rounded versions
(MEMO_BYTES). Goldens never modify their inputs.
Traced shapes are per-device shapes (what one chip holds). On a mesh (`mesh_inputs`), every chip
gets exactly the vector's data: a whole-mesh tensor repeated along the traced placement's shard
dims over its distribution shape, so chips with the same inputs must agree; a collective's input
is the one global tensor its golden reads (the per-chip inputs concatenated along its dim, sharded
over the cluster axis).
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from sweeps import configobjects
from sweeps.catalogue import OpDef
from sweeps.memconfig import to_ttnn
from sweeps.vector import tensor_slots

INTEGER_DTYPES = {
    "UINT32": torch.int64,
    "INT32": torch.int32,
    "UINT16": torch.int32,
    "UINT8": torch.uint8,
    "INT8": torch.int8,
}
_INT_HIGH = {"UINT8": 16, "INT8": 16}
MEMO_BYTES = 512 << 20  # an executor keeps this much of recent large inputs (and their rounded versions)
MEMO_MIN_ELEMENTS = 1 << 20  # smaller tensors are cheaper to make again than to keep


@dataclass
class Prepared:
    """A vector's inputs in fp32 (for the reference golden) and as traced dtypes round them."""

    tensors: dict[str, dict[str, Any]]  # slot -> canonical tensor description
    originals: dict[str, torch.Tensor]  # slot -> generated fp32 / integer data (per device)
    output_dtype: str
    device_inputs: list[torch.Tensor] = field(default_factory=list)  # collectives: one per device
    keys: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # slot -> what its data is made from

    def rounded(self, ttnn: Any) -> dict[str, torch.Tensor]:
        """Each input as its traced dtype holds it (kept with the input when that is kept)."""
        return {
            slot: _MEMO.get(
                ("rounded", *self.keys[slot]), lambda d=data, t=self.tensors[slot]: quantize(ttnn, d, t["dtype"])
            )
            for slot, data in self.originals.items()
        }

    def rounded_ring(self, ttnn: Any) -> list[torch.Tensor]:
        """A collective's per-device inputs as the first input's dtype holds them."""
        return [quantize(ttnn, data, self.tensors["0"]["dtype"]) for data in self.device_inputs]

    def threshold(self, opdef: OpDef) -> tuple[float, str]:
        """The PCC this vector must reach and which tensor's dtype set it ("input 1 BFLOAT8_B")."""
        named = [(f"input {slot}", t["dtype"]) for slot, t in self.tensors.items()]
        return opdef.threshold_of(named + [("output", self.output_dtype)])


class _Memo:
    """Recently made large tensors by what they are made from, least recently used dropped first."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.items: OrderedDict[tuple[Any, ...], torch.Tensor] = OrderedDict()
        self.size = 0

    def get(self, key: tuple[Any, ...], make: Callable[[], torch.Tensor]) -> torch.Tensor:
        found = self.items.get(key)
        if found is not None:
            self.items.move_to_end(key)
            return found
        value = make()
        size = value.element_size() * value.nelement()
        if value.nelement() >= MEMO_MIN_ELEMENTS and size <= self.budget // 4:
            self.items[key] = value
            self.size += size
            while self.size > self.budget:
                _, dropped = self.items.popitem(last=False)
                self.size -= dropped.element_size() * dropped.nelement()
        return value


_MEMO = _Memo(MEMO_BYTES)


def seed_of(key: tuple[Any, ...]) -> int:
    """A tensor's seed from what it is (slot, shape, dtype, data kind, referred shapes)."""
    return int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "big") >> 1


def generate(
    tensor: dict[str, Any], kind: str, gen: torch.Generator, refs: list[list[int]] | None = None
) -> torch.Tensor:
    """Input data for one tensor: fp32 for float dtypes, integers for integer dtypes. `refs`: the
    shapes of the tensors a kind refers to (sweeps.catalogue data kinds), in the kind's order."""
    shape = list(tensor["shape"])
    dtype = tensor["dtype"]
    ints = INTEGER_DTYPES.get(dtype, torch.int64)
    name = kind.split(":", 1)[0]
    if name == "index":  # rows of the referenced tensor (its second-to-last dim)
        if not refs or not refs[0]:  # a catalogue entry naming a tensor the call lacks: our error
            raise KeyError(kind.split(":", 1)[1])
        return torch.randint(0, max(1, refs[0][-2]), shape, generator=gen, dtype=ints)
    if name == "distinct":  # per row, distinct positions along the referenced tensor's last dim
        rows, width = math.prod(shape[:-1]), shape[-1] if shape else 1
        order = torch.rand(rows, refs[0][-1], generator=gen).argsort(dim=1)[:, :width]
        return order.reshape(shape).to(ints)
    if name == "page_table":  # distinct pages of the referenced cache ([pages, heads, block, dim])
        pages, count = refs[0][0], math.prod(shape)
        table = torch.randperm(pages, generator=gen)[:count] if count <= pages else torch.randint(0, pages, (count,))
        return table.reshape(shape).to(ints)
    if name == "position":  # token positions the page table covers (the cache's own rows without one)
        table, cache = refs
        limit = (table[-1] if table else 1) * cache[-2]
        return torch.randint(0, max(1, limit), shape, generator=gen, dtype=ints)
    if name == "rope_trans_mat":  # per 32x32 block: x @ m turns pairs (a, b) into (-b, a)
        block = torch.zeros(32, 32)
        block[torch.arange(1, 32, 2), torch.arange(0, 32, 2)] = -1.0
        block[torch.arange(0, 32, 2), torch.arange(1, 32, 2)] = 1.0
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


def quantize(ttnn: Any, data: torch.Tensor, dtype: str) -> torch.Tensor:
    """`data` as a ttnn tensor of `dtype` holds it: block floats through ttnn's own host conversion
    (real bfloat8_b / bfloat4_b block rounding), bfloat16 in torch (round to nearest even, as ttnn
    does; twice as fast). Returned as fp32 (or integers)."""
    if not data.is_floating_point():
        return data
    if dtype == "FP8_E4M3":  # ttnn's to_torch does not support FP8 on one device: round in torch
        return data.to(torch.float8_e4m3fn).to(torch.float32)
    if dtype in INTEGER_DTYPES:
        return data.to(torch.int64)
    if dtype == "BFLOAT16":
        return data.to(torch.bfloat16).to(torch.float32)
    if dtype == "FLOAT32":
        return data.to(torch.float32)
    host = ttnn.from_torch(data.to(torch.float32), dtype=ttnn.DataType[dtype], layout=ttnn.TILE_LAYOUT)
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


_SPECIAL_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


Dims = tuple[int | None, ...]  # per distribution axis, the tensor dim it shards (None: replicated)


@dataclass(frozen=True)
class MeshInput:
    """One input as the device backend sends it: the whole-mesh tensor the mapper splits, the tensor
    dim each distribution axis shards (None: replicated), and the distribution shape."""

    data: torch.Tensor
    dims: Dims
    shape: tuple[int, ...]


def shard_dims(placement: dict[str, Any] | None, rank: int) -> Dims:
    """Per distribution axis, the tensor dim it shards, normalised to [0, rank). A dim already
    sharded by an earlier axis is replicated instead (ttnn's partition refuses "dims must be
    unique"; the data is repeated along it once), as is a dim this rank does not have."""
    dims: list[int | None] = []
    for item in (placement or {}).get("placements") or []:
        dim = int(item[6:-1]) if item.startswith("shard(") else None
        if dim is not None:
            dim = dim + rank if dim < 0 else dim
            if not 0 <= dim < rank or dim in dims:
                dim = None
        dims.append(dim)
    return tuple(dims)


def distribution(placement: dict[str, Any] | None, rank: int, mesh: tuple[int, int]) -> tuple[Dims, tuple[int, ...]]:
    """(dims, distribution shape) for one tensor on `mesh`: the traced distribution shape when it
    spans the mesh's chips (a 1-D `[32]` is what ShardTensorToMesh records; ttnn's distributed_tensor
    refuses a 1-D placement over a 2-D shape), else the mesh itself (2 axes) or its chips in a row."""
    dims = shard_dims(placement, rank)
    chips = mesh[0] * mesh[1]
    traced = tuple((placement or {}).get("distribution_shape") or ())
    if dims and len(traced) == len(dims) and math.prod(traced) == chips:
        return dims, traced
    if len(dims) == 2:
        return dims, tuple(mesh)
    return (dims[0] if len(dims) == 1 else None,), (chips,)


def mesh_inputs(
    opdef: OpDef, vector: dict[str, Any], prepared: Prepared, mesh: tuple[int, int]
) -> dict[str, MeshInput]:
    """Every input slot as the device backend sends it to `mesh` (the vector's traced mesh)."""
    out = {}
    for slot, tensor in prepared.tensors.items():
        data = prepared.originals[slot]
        if opdef.collective and slot == "0" and prepared.device_inputs:
            out[slot] = collective_input(vector, prepared, mesh)
            continue
        dims, shape = distribution(tensor.get("placement"), data.dim(), mesh)
        repeats = [1] * data.dim()
        for axis, dim in enumerate(dims):
            if dim is not None:
                repeats[dim] *= shape[axis]
        out[slot] = MeshInput(data.repeat(*repeats) if data.dim() else data, dims, shape)
    return out


def collective_input(vector: dict[str, Any], prepared: Prepared, mesh: tuple[int, int]) -> MeshInput:
    """A collective's input: the golden's per-chip inputs concatenated along the op's dim, sharded
    over the cluster axis (replicated over the other), or over every chip in a row without one —
    chip i of the ring gets exactly `device_inputs[i]` (tt-metal's CCL sweeps shard one global
    tensor along the gather dim and judge against it)."""
    data = prepared.originals["0"]
    raw = vector["kwargs"].get("dim", vector["inputs"][1] if len(vector["inputs"]) > 1 else 0)
    dim = int(raw) + data.dim() if int(raw) < 0 else int(raw)
    whole = torch.cat(prepared.device_inputs, dim=dim)
    axis = vector["kwargs"].get("cluster_axis")
    if axis in (0, 1):
        return MeshInput(whole, (dim, None) if axis == 0 else (None, dim), tuple(mesh))
    return MeshInput(whole, (dim,), (mesh[0] * mesh[1],))


def judged_chips(opdef: OpDef, vector: dict[str, Any], mesh: tuple[int, int], every: bool = False) -> tuple[
        int, list[int]]:  # fmt: skip
    """(The chip whose output is judged, chips whose output must equal it because they got the same
    inputs and ran the same program), as row-major indexes on `mesh`. An op given `mesh_coords` runs
    on those chips only (a Galaxy's paged_fill_cache fills one chip's cache): the first is judged.
    Else chip 0, and the last chip (`every`: all, for the health check), except for a
    reduce_scatter, where chip i keeps chunk i of its ring: the chips of chip 0's column (cluster
    axis 1) or row (0)."""
    rows, cols = mesh
    coords = vector["kwargs"].get("mesh_coords")
    if isinstance(coords, dict) and coords.get("mesh_coordinates"):
        ran = sorted(r * cols + c for r, c in coords["mesh_coordinates"] if r < rows and c < cols) or [0]
        first, same = ran[0], ran[1:]
    elif not (opdef.collective and "reduce_scatter" in opdef.name):
        first, same = 0, list(range(1, rows * cols))
    else:
        axis = vector["kwargs"].get("cluster_axis")
        first, same = 0, [r * cols for r in range(1, rows)] if axis == 1 else list(range(1, cols)) if axis == 0 else []
    return first, same if every else same[-1:]


def mesh_mapper(ttnn: Any, target: Any, mesh_input: MeshInput) -> Any:
    """The mapper for one input: `target` is the mesh device, or a ttnn.MeshShape on the host."""
    placements = [ttnn.PlacementReplicate() if d is None else ttnn.PlacementShard(d) for d in mesh_input.dims]
    return ttnn.create_mesh_mapper(target, ttnn.MeshMapperConfig(placements, ttnn.MeshShape(list(mesh_input.shape))))


def to_ttnn_value(ttnn: Any, value: Any, resolve: Callable[[dict[str, Any]], Any]) -> Any:
    """A canonical non-tensor value as the ttnn call takes it: enums by name, memory configs rebuilt
    exactly, special floats from the vector's strings ("-inf"), mesh coordinates as a set of
    ttnn.MeshCoordinate, tiles as ttnn.Tile; devices and run-time objects (semaphores) come from
    `resolve` (None when emulated). Config objects are built by `substitute` (sweeps.configobjects)."""
    if isinstance(value, str):
        return _SPECIAL_FLOATS.get(value, value)
    if isinstance(value, dict):
        if "mesh_coordinates" in value and len(value) == 1:
            return {ttnn.MeshCoordinate(*coord) for coord in value["mesh_coordinates"]}
        if "tile" in value and len(value) == 1:
            return ttnn.Tile(value["tile"])
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
    """The call's args and kwargs with each tensor slot replaced by `tensor_values[slot]` and each
    config object built into its ttnn object (ConfigObjectError, before any op call, when one
    cannot be: sweepctl's ERROR, never the op's)."""
    built = {slot: configobjects.build(ttnn, name, fields)
             for slot, (name, fields) in configobjects.objects(vector["inputs"], vector["kwargs"]).items()}  # fmt: skip
    args = [built[str(i)] if str(i) in built else _fill(ttnn, str(i), v, tensor_values, resolve)
            for i, v in enumerate(vector["inputs"])]  # fmt: skip
    kwargs = {k: built[k] if k in built else _fill(ttnn, k, v, tensor_values, resolve)
              for k, v in vector["kwargs"].items()}  # fmt: skip
    return args, kwargs


def _fill(ttnn: Any, slot: str, value: Any, tensor_values: dict[str, Any], resolve) -> Any:
    """One argument of the call. A module function, not a closure: a recursive closure is a
    reference cycle that would keep every input tensor of the vector alive until the cyclic GC runs
    (an executor held gigabytes of them)."""
    if isinstance(value, dict) and "tensor" in value:
        return tensor_values[slot]
    if isinstance(value, list) and any(isinstance(v, dict) and "tensor" in v for v in value):
        return [_fill(ttnn, f"{slot}.{i}", v, tensor_values, resolve) for i, v in enumerate(value)]
    return to_ttnn_value(ttnn, value, resolve)


def referred_shapes(kind: str, tensors: dict[str, dict[str, Any]]) -> list[list[int]]:
    """The shapes of the slots a data kind names ("page_table:0|cache_tensor" -> [cache shape]); []
    for a slot the call does not have (position's page table, when the cache is not paged)."""
    shapes = []
    for options in kind.split(":")[1:]:
        found = next((tensors[s]["shape"] for s in options.split("|") if s in tensors), None)
        shapes.append(list(found) if found is not None else [])
    return shapes


def _made(key: tuple[Any, ...], tensor: dict[str, Any], kind: str, refs: list[list[int]]) -> torch.Tensor:
    return generate(tensor, kind, torch.Generator().manual_seed(seed_of(key)), refs)


def prepare(ttnn: Any, opdef: OpDef, vector: dict[str, Any]) -> Prepared:
    tensors = dict(tensor_slots(vector))
    originals: dict[str, torch.Tensor] = {}
    keys: dict[str, tuple[Any, ...]] = {}
    for slot, tensor in tensors.items():
        kind = opdef.data_kind(slot)
        refs = referred_shapes(kind, tensors)
        key = keys[slot] = (slot, tuple(tensor["shape"]), tensor["dtype"], kind, tuple(map(tuple, refs)))
        originals[slot] = _MEMO.get(key, lambda k=key, t=tensor, d=kind, r=refs: _made(k, t, d, r))
    prepared = Prepared(tensors, originals, output_dtype(vector, tensors), keys=keys)
    if opdef.collective and "0" in tensors:
        ring = [_made((*keys["0"], "device", d), tensors["0"], "normal", []) for d in range(1, ring_size(vector))]
        prepared.device_inputs = [originals["0"], *ring]
    return prepared


_GOLDENS: dict[str, Callable[..., Any]] = {}


def golden_function(ttnn: Any, opdef: OpDef) -> Callable[..., Any]:
    """The op's golden as (args, kwargs, ctx) -> torch: its adapter, else ttnn's own, called with
    only the kwargs its signature takes; through the op's view when it has one (the judged part of
    the output). Resolved once per op per process."""
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
    golden = _the_golden(ttnn, opdef)
    view = opdef.view
    if view is None:
        return golden
    return lambda args, kwargs, ctx: view(first_output(golden(args, kwargs, ctx)), args, kwargs)


def _the_golden(ttnn: Any, opdef: OpDef) -> Callable[..., Any]:
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


def no_device(value: dict[str, Any]) -> None:
    """Devices and run-time objects (semaphores) where the call runs on the host: there are none."""
    return None


def reference(ttnn: Any, golden: Callable[..., Any], vector: dict[str, Any], prepared: Prepared) -> tuple:
    """The golden on the fp32 inputs, which every backend (and a repro file) judges against: its args
    and kwargs (an op's view reads them) and its first output."""
    ref_args, ref_kwargs = substitute(ttnn, vector, prepared.originals, no_device)
    return ref_args, ref_kwargs, first_output(golden(ref_args, ref_kwargs, {"device_inputs": prepared.device_inputs}))


def first_output(value: Any) -> torch.Tensor:
    """Ops returning several tensors (topk: values, indices) are judged on the first."""
    while isinstance(value, (tuple, list)):
        value = value[0]
    return value
