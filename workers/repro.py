"""A vector as a standalone pytest file for a machine with the device (`sweepctl repro`): what a
person pastes into a bug report.

The device part is literal ttnn code, rendered from the decisions the device backend makes: the
mesh, fabric, dispatch and L1_SMALL of the vector's plan (sweeps/meshplan.py), each input's
`from_torch` with its dtype, layout, exact memory config and mesh mapper (sweeps.materialize
`mesh_inputs`: what each chip gets), the op called with the traced arguments (canonical values
rendered as `sweeps.materialize.to_ttnn_value` builds them, config objects as their ttnn
constructors), a warm-up then a timed call with fresh global semaphores, the judged chip's output
read back (sweeps.materialize `judged_chips`), a chip that got the same inputs required to agree,
PCC against the golden at the vector's threshold. The data is not inlined: the file calls
`host_data` below, i.e. sweepctl's own seeded generator and golden, so the inputs are bit for bit
what the sweep used; sweepctl must be importable where it runs, and the file says so.
Rendering needs torch (to know each input's whole-mesh shape), never ttnn or a device.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

import torch

from sweeps import configobjects, status
from sweeps.catalogue import OpDef, lookup
from sweeps.materialize import (
    MeshInput,
    golden_function,
    judged_chips,
    mesh_inputs,
    prepare,
    reference,
)
from sweeps.meshplan import MeshPlan, MeshPlanError, mesh_plan
from sweeps.profiles import get_profile

WIDTH = 100  # the file's line length
_SPECIAL_FLOATS = {"nan": 'float("nan")', "inf": 'float("inf")', "-inf": 'float("-inf")'}
_TAKEN = {"mesh", "data", "call", "output", "chips", "result", "start", "ok", "pcc", "ttnn", "torch", "time", "pytest"}


class ReproError(ValueError):
    """A vector no repro can be written for (no definition, an argument the trace lacks, no mesh)."""


# --- what the generated file imports -------------------------------------------------------------


@dataclass
class HostData:
    """What the device backend builds on the host for one vector (workers/device.py `_run`)."""

    inputs: dict[str, torch.Tensor]  # slot -> the whole-mesh tensor its mesh mapper splits
    golden: torch.Tensor
    opdef: OpDef
    ref_args: list[Any]
    ref_kwargs: dict[str, Any]

    def judged(self, output: torch.Tensor) -> torch.Tensor:
        """The part of the judged chip's output the golden is compared with (the op's view, if any)."""
        view = self.opdef.view
        return output if view is None else view(output, self.ref_args, self.ref_kwargs)


def host_data(ttnn: Any, vector: dict[str, Any], mesh_shape: tuple[int, int]) -> HostData:
    """The vector's inputs and golden, from sweepctl's own seeded generator and golden."""
    opdef = lookup(vector["op"])
    prepared = prepare(ttnn, opdef, vector)
    ref_args, ref_kwargs, golden = reference(ttnn, golden_function(ttnn, opdef), vector, prepared)
    inputs = {slot: m.data for slot, m in mesh_inputs(opdef, vector, prepared, mesh_shape).items()}
    return HostData(inputs, golden, opdef, ref_args, ref_kwargs)


# --- rendering -----------------------------------------------------------------------------------


@dataclass
class Call:
    """`func(args...)` rendered on one line when it fits, else one argument per line."""

    func: str
    args: list[tuple[str | None, Any]]  # (keyword or None, str | Call | Seq)


@dataclass
class Seq:
    items: list[Any]
    open: str = "["
    close: str = "]"


def one_line(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, Seq):
        return node.open + ", ".join(one_line(i) for i in node.items) + node.close
    return f"{node.func}(" + ", ".join((f"{k}=" if k else "") + one_line(v) for k, v in node.args) + ")"


def layout(node: Any, indent: int, lead: str = "", tail: str = "") -> list[str]:
    """`node` as lines at `indent`, prefixed by `lead` ("x = ", "dtype=") and followed by `tail`."""
    pad = " " * indent
    flat = pad + lead + one_line(node) + tail
    if len(flat) <= WIDTH or isinstance(node, str):
        return [flat]
    if isinstance(node, Seq):
        head, parts, close = node.open, [(None, i) for i in node.items], node.close
    else:
        head, parts, close = f"{node.func}(", node.args, ")"
    lines = [pad + lead + head]
    for key, value in parts:
        lines += layout(value, indent + 4, f"{key}=" if key else "", ",")
    return lines + [pad + close + tail]


def enum(name: str, member: str) -> str:
    return f"ttnn.{name}.{member}" if member.isidentifier() else f"ttnn.{name}[{member!r}]"


def memory_config(mc: dict[str, Any] | None) -> Any:
    """`sweeps.memconfig.to_ttnn` as code."""
    if mc is None:
        return "None"
    args: list[tuple[str | None, Any]] = [
        (None, enum("TensorMemoryLayout", mc["memory_layout"])),
        (None, enum("BufferType", mc["buffer_type"])),
    ]
    spec = mc.get("shard_spec")
    if spec is not None:
        ranges = [
            Call("ttnn.CoreRange", [(None, f"ttnn.CoreCoord({r['start'][0]}, {r['start'][1]})"),
                                    (None, f"ttnn.CoreCoord({r['end'][0]}, {r['end'][1]})")])
            for r in spec["grid"]
        ]  # fmt: skip
        args.append((None, Call("ttnn.ShardSpec", [
            (None, Call("ttnn.CoreRangeSet", [(None, Seq(ranges))])),
            (None, repr(list(spec["shape"]))),
            (None, enum("ShardOrientation", spec["orientation"])),
        ])))  # fmt: skip
    return Call("ttnn.MemoryConfig", args)


def value_code(value: Any, names: dict[str, str], slot: str) -> Any:
    """A canonical argument as code: `sweeps.materialize._fill` / `to_ttnn_value`, written out."""
    if isinstance(value, dict) and "tensor" in value:
        return names[slot]
    if isinstance(value, str):
        return _SPECIAL_FLOATS.get(value, repr(value))
    if isinstance(value, dict):
        if "mesh_coordinates" in value and len(value) == 1:
            return Seq([f"ttnn.MeshCoordinate({', '.join(map(str, c))})" for c in value["mesh_coordinates"]], "{", "}")
        if "tile" in value and len(value) == 1:
            return f"ttnn.Tile({value['tile']!r})"
        if "enum" in value:
            return enum(value["enum"], str(value["value"]))
        if "memory_config" in value and len(value) == 1:
            return memory_config(value["memory_config"])
        if "device" in value:
            return "mesh"
        if "runtime_object" in value:
            return "semaphore(mesh)" if value["runtime_object"] == "global_semaphore" else "None"
        return Seq([f"{k!r}: {one_line(value_code(v, names, slot))}" for k, v in value.items()], "{", "}")
    if isinstance(value, list):
        return Seq([value_code(v, names, f"{slot}.{i}") for i, v in enumerate(value)])
    return repr(value)


def config_objects(vector: dict[str, Any]) -> dict[str, Call]:
    """Each config object argument as its ttnn constructor (`sweeps.configobjects.build`, written out)."""
    calls = {}
    for slot, (name, fields) in configobjects.objects(vector["inputs"], vector["kwargs"]).items():
        try:
            func, args = configobjects.code(name, fields)
        except configobjects.ConfigObjectError as exc:
            raise ReproError(f"argument {slot}: {exc}") from None
        calls[slot] = Call(func, [(k or None, v) for k, v in args])
    return calls


def variable(slot: str) -> str:
    name = "input_" + slot.replace(".", "_") if slot[0].isdigit() else slot.replace(".", "_")
    return f"{name}_tensor" if name in _TAKEN else name


def mapper(target: str, mesh_input: MeshInput) -> Call:
    """`sweeps.materialize.mesh_mapper` as code."""
    placements = Seq([f"ttnn.PlacementShard({d})" if d is not None else "ttnn.PlacementReplicate()"
                      for d in mesh_input.dims])  # fmt: skip
    config = Call("ttnn.MeshMapperConfig", [(None, placements), (None, f"ttnn.MeshShape({list(mesh_input.shape)})")])
    return Call("ttnn.create_mesh_mapper", [(None, target), (None, config)])


def send(slot: str, tensor: dict[str, Any], mesh_input: MeshInput) -> Call:
    """`DeviceBackend.send` as code: on the mesh with its exact memory config, or kept on the host."""
    host = tensor.get("storage") == "HOST"
    mc = tensor.get("memory_config")
    return Call("ttnn.from_torch", [
        (None, f"data.inputs[{slot!r}]"),
        ("dtype", enum("DataType", tensor["dtype"])),
        ("layout", enum("Layout", tensor["layout"])),
        ("device", "None" if host else "mesh"),
        ("memory_config", memory_config(mc) if mc and not host else "None"),
        ("mesh_mapper", mapper("mesh", mesh_input)),
    ])  # fmt: skip


def render(vector: dict[str, Any], origin: str, command: list[str], filename: str,
           never_runs: dict[str, Any] | None = None) -> str:  # fmt: skip
    """The pytest file `filename` for `vector`; `origin` says where it came from ("run R", "store S")."""
    opdef = lookup(vector["op"])
    if opdef is None or opdef.test_only:
        raise ReproError(f"{vector['op']} has no sweep definition: there is no golden to check it against")
    if never_runs is not None and never_runs["status"] != status.INVALID:
        raise ReproError(f"enqueue books it {never_runs['status']}: {never_runs['message']}")
    profile = get_profile(vector["machine"])
    try:
        plan = mesh_plan(profile, vector)
    except MeshPlanError as exc:
        raise ReproError(f"no {profile.name} mesh holds it: {exc}") from None
    prepared = prepare(None, opdef, vector)
    threshold, threshold_dtype = prepared.threshold(opdef)
    inputs = mesh_inputs(opdef, vector, prepared, plan.shape)
    names = {slot: variable(slot) for slot in prepared.tensors}
    short = vector["op"].rsplit(".", 1)[-1]
    lines = _header(vector, origin, command, plan, never_runs, filename)
    lines += ["MESH_SHAPE = " + repr(plan.shape) + "  # the mesh the op runs on",
              f"PCC_THRESHOLD = {threshold!r}  # set by {threshold_dtype}", "", ""]  # fmt: skip
    lines += _fixtures(plan, vector)
    semaphores = any(v.get("runtime_object") == "global_semaphore" for v in _dicts(vector))
    if semaphores:
        lines += _SEMAPHORE
    lines += [f"def test_{short}(data, mesh):"]
    for slot, tensor in prepared.tensors.items():
        lines += layout(send(slot, tensor, inputs[slot]), 4, f"{names[slot]} = ")
    objects = config_objects(vector)
    args = [(None, objects.get(str(i)) or value_code(v, names, str(i))) for i, v in enumerate(vector["inputs"])]
    args += [(k, objects.get(k) or value_code(v, names, k)) for k, v in vector["kwargs"].items()]
    lines += ["", "    def call():"]
    if semaphores:
        lines.append("        # the traced call; every call gets fresh global semaphores, as in the sweep")
    lines += layout(Call(vector["op"], args), 8, "return ")
    lines += _timed_and_checked(*judged_chips(opdef, vector, plan.shape))
    lines += ["", "", "# the vector exactly as sweepctl ran it: host_data makes the inputs and the golden from it"]
    lines += ["VECTOR = " + literal(vector, 0)]
    return "\n".join(lines) + "\n"


def literal(value: Any, depth: int) -> str:
    """A Python literal of the vector: its fields, its arguments and their items one per line."""
    pad = "    " * (depth + 1)
    if depth < 2 and isinstance(value, dict) and value:
        items = [f"{pad}{k!r}: {literal(v, depth + 1)}," for k, v in sorted(value.items())]
        return "{\n" + "\n".join(items) + "\n" + "    " * depth + "}"
    if depth < 2 and isinstance(value, list) and len(repr(value)) > WIDTH - len(pad):
        return "[\n" + "\n".join(f"{pad}{literal(v, depth + 1)}," for v in value) + "\n" + "    " * depth + "]"
    return repr(value)


def _dicts(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value, *[d for v in value.values() for d in _dicts(v)]]
    if isinstance(value, list):
        return [d for v in value for d in _dicts(v)]
    return []


def _header(vector: dict[str, Any], origin: str, command: list[str], plan: MeshPlan,
            never_runs: dict[str, Any] | None, filename: str) -> list[str]:  # fmt: skip
    mesh = "x".join(map(str, plan.shape))
    lines = [
        f'"""Repro: {vector["op"]} on {vector["machine"]}, mesh {mesh}.',
        "",
        f"sweepctl vector {vector['id']} of {origin}",
        f"config_hash {vector.get('config_hash')}",
    ]
    if vector.get("sources"):
        lines.append("traced in " + ", ".join(vector["sources"]))
    if never_runs is not None:
        lines.append(f"sweepctl's host validation booked it {never_runs['status']}: {never_runs['message']}")
    lines += [
        f"written by {' '.join(shlex.quote(c) for c in command)}",
        "",
        f"Run it on a {vector['machine']} host:  PYTHONPATH=<sweepctl checkout> pytest -s {filename}",
        "",
        "The device calls below are plain ttnn. The input data and the golden come from sweepctl",
        "(workers.repro.host_data: the seeded generator and per-op golden the sweep used), so the",
        "inputs are bit for bit the sweep's: sweepctl must be importable; nothing else of it is used.",
        '"""',
        "",
        "import time",
        "",
        "import pytest",
        "import torch",
        "import ttnn",
        "",
        "from sweeps.pcc import passes",
        "from workers.repro import host_data",
        "",
    ]
    return lines


def _fixtures(plan: MeshPlan, vector: dict[str, Any]) -> list[str]:
    dispatch = Call("ttnn.DispatchCoreConfig", [(None, enum("DispatchCoreType", plan.dispatch_core_type)),
                                                (None, enum("DispatchCoreAxis", plan.dispatch_core_axis))])  # fmt: skip
    opened = Call("ttnn.open_mesh_device", [(None, f"ttnn.MeshShape({plan.mesh_shape[0]}, {plan.mesh_shape[1]})"),
                                            ("l1_small_size", str(plan.l1_small_size)),
                                            ("dispatch_core_config", dispatch)])  # fmt: skip
    lines = [
        "@pytest.fixture",
        "def data():",
        '    """Inputs (each the whole-mesh tensor its mapper splits) and golden, built before the device opens."""',
        "    data = host_data(ttnn, VECTOR, MESH_SHAPE)",
        "    for slot, tensor in data.inputs.items():",
        '        print(f"input {slot}: {list(tensor.shape)} {tensor.dtype}")',
        '    print(f"golden: {list(data.golden.shape)}")',
        "    return data",
        "",
        "",
        "@pytest.fixture",
        "def mesh():",
    ]
    what = f"the {plan.mesh_shape[0]}x{plan.mesh_shape[1]} mesh"
    if plan.submesh_shape is not None:
        what += f", the op on its {plan.submesh_shape[0]}x{plan.submesh_shape[1]} submesh"
    fabric = f"fabric {plan.fabric}" if plan.fabric else "no fabric (one chip)"
    lines.append(f'    """As sweepctl opens it for this vector: {what}; {fabric}; dispatch '
                 f'{plan.dispatch_core_type}/{plan.dispatch_core_axis}."""')  # fmt: skip
    body = layout(opened, 4, "whole = ")
    use = "whole" if plan.submesh_shape is None else (
        f"whole.create_submesh(ttnn.MeshShape({plan.submesh_shape[0]}, {plan.submesh_shape[1]}))")  # fmt: skip
    inner = ["    try:", f"        yield {use}", "    finally:", "        ttnn.close_mesh_device(whole)"]
    if plan.fabric is None:
        return lines + body + inner + ["", ""]
    lines += [
        "    ttnn.set_fabric_config(ttnn.FabricConfig.DISABLED)  # metal refuses one live config to another",
        f"    ttnn.set_fabric_config(ttnn.FabricConfig.{plan.fabric})  # before the open",
        "    try:",
    ]
    lines += ["    " + line for line in body + inner]
    lines += ["    finally:", "        ttnn.set_fabric_config(ttnn.FabricConfig.DISABLED)  # after the close", "", ""]
    return lines


_SEMAPHORE = [
    "def semaphore(mesh):",
    '    """A fresh global semaphore on every worker core of the mesh, initial value 0."""',
    "    grid = mesh.compute_with_storage_grid_size()",
    "    cores = ttnn.CoreRangeSet([ttnn.CoreRange(ttnn.CoreCoord(0, 0), ttnn.CoreCoord(grid.x - 1, grid.y - 1))])",
    "    return ttnn.create_global_semaphore(mesh, cores, 0)",
    "",
    "",
]


def _timed_and_checked(judged: int, peers: list[int]) -> list[str]:
    lines = [
        "",
        "    start = time.perf_counter()",
        "    call()  # warm-up: compiles the kernels and fills the program cache",
        "    ttnn.synchronize_device(mesh)",
        '    print(f"warm-up (compile + first run): {(time.perf_counter() - start) * 1000:.3f} ms")',
        "    start = time.perf_counter()",
        "    output = call()",
        "    ttnn.synchronize_device(mesh)",
        '    print(f"e2e: {(time.perf_counter() - start) * 1000:.3f} ms")',
        "    while isinstance(output, (list, tuple)):  # ops returning several tensors are judged on the first",
        "        output = output[0]",
        "",
        "    chips = ttnn.get_device_tensors(output)  # row-major over the mesh",
        f"    result = ttnn.to_torch(chips[{judged}])",
    ]
    for peer in peers:
        lines += [
            f"    # chip {peer} got the same inputs as chip {judged}: it must agree exactly",
            f"    torch.testing.assert_close(ttnn.to_torch(chips[{peer}]), result, rtol=0, atol=0, equal_nan=True)",
        ]
    lines += [
        "    ok, pcc = passes(data.golden, data.judged(result), PCC_THRESHOLD)",
        '    print(f"PCC {pcc:.6f} (threshold {PCC_THRESHOLD})")',
        '    assert ok, f"PCC {pcc:.6f} below {PCC_THRESHOLD}"',
    ]
    return lines
