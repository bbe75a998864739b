"""The child process of tests/test_device_conformance.py: one machine profile under its mock
cluster descriptor, checking what the ttnn device backend would do there, without a device.

It reads `{"machine", "vectors": [{"vector", "from", "real"}...], "topologies": [[vector...]...]}`
(msgpack) on stdin and writes `{"problems", "counts", "facts", "topologies"}` as the last line of
stdout (JSON after MARK).

* Plans: every vector's traced mesh is contained by the mesh its plan opens, that mesh is one the
  profile opens, the plan's dispatch grid holds every core the vector names, and fabric is set
  exactly when more than one chip is opened.
* Per-chip data: each input goes through `DeviceBackend.send` (the mapper it builds, the exact
  `from_torch` call) into `Recording`, which stands in for the calls that need a device only: a
  `from_torch` with `device=` runs as the same host `from_torch` without the device and memory
  config, giving a host multi-device tensor whose `get_device_tensors` are what each chip would
  receive. Each chip must hold exactly its data: the vector's input (every chip, so that chips may
  be compared), or for a collective the golden's `device_inputs[i]` for its place i in the ring.
  Shapes are the real ranks, placements and meshes with each dim cut to at most a tile (the real
  per-chip tensors reach 3.7 G elements over a Galaxy); distinct layouts are checked once.
* Open sequence: `DeviceBackend` opens and reopens through `Recording` for each topology (no
  device is opened: `open_mesh_device` / `close_mesh_device` are recorded, `set_fabric_config` is
  ttnn's real one, so the fabric state read back at open and after close is ttnn's own).
* Runs: whole vectors through `DeviceBackend.run` with the op call, its semaphores and synchronize
  recorded; the order of calls and which semaphore handles each op call got are returned. The
  op's stand-in output is its first input, so the outcome says only that sweepctl's own code ran
  through (not ERROR), never whether the op is right.
None of this is a device result; no op is called.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

import msgpack

MAX_DIM, MAX_TILE = 2, 32  # per-chip stand-in sizes: real ranks and placements, a tile of data
MARK = "CONFORMANCE "  # the result line (ttnn logs to stdout too)


class StandInMesh:
    """What `Recording.open_mesh_device` returns: a mesh's shape, nothing that needs a device."""

    def __init__(self, ttnn: Any, shape: tuple[int, int], grid: tuple[int, int]) -> None:
        self.ttnn, self.shape, self.grid = ttnn, tuple(shape), grid

    def create_submesh(self, shape: Any) -> StandInMesh:
        return StandInMesh(self.ttnn, tuple(shape), self.grid)

    def compute_with_storage_grid_size(self) -> Any:
        return self.ttnn.CoreCoord(*self.grid)


class Recording:
    """The real ttnn module, except the calls that need a device, which are recorded: opening and
    closing the mesh, `from_torch(device=...)`, global semaphores, synchronize, and the op named by
    `op` (its stand-in result is its first input: not a device result, never judged)."""

    def __init__(self, ttnn: Any, grid: tuple[int, int], op: str = "") -> None:
        self._ttnn, self._grid, self._op = ttnn, grid, op.split(".")[1:]
        self.events: list[tuple[Any, ...]] = []
        self.live = 0

    def __getattr__(self, name: str) -> Any:
        if self._op and name == self._op[0]:
            return _OpPath(self, getattr(self._ttnn, name), self._op[1:])
        return getattr(self._ttnn, name)

    def create_global_semaphore(self, mesh: StandInMesh, cores: Any, value: int) -> tuple[str, int]:
        handle = ("semaphore", len(self.events))
        self.events.append(handle)
        return handle

    def synchronize_device(self, mesh: StandInMesh) -> None:
        self.events.append(("sync",))

    def called(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        handles = [v for v in [*args, *kwargs.values()] for v in (v if isinstance(v, list) else [v])
                   if isinstance(v, tuple) and v[:1] == ("semaphore",)]  # fmt: skip
        self.events.append(("op", [h[1] for h in handles]))
        return next(a for a in [*args, *kwargs.values()] if isinstance(a, self._ttnn.Tensor))


    def set_fabric_config(self, config: Any) -> None:
        self._ttnn.set_fabric_config(config)  # ttnn's own: refused if a device were open
        self.events.append(("fabric", config.name))

    def open_mesh_device(self, shape: Any, l1_small_size: int, dispatch_core_config: Any) -> StandInMesh:
        fabric = self._ttnn.get_fabric_config().name
        config = dispatch_core_config
        self.events.append(("open", tuple(shape), l1_small_size, config.type.name, config.axis.name, fabric, self.live))
        self.live += 1
        return StandInMesh(self._ttnn, tuple(shape), self._grid)

    def close_mesh_device(self, mesh: StandInMesh) -> None:
        self.live -= 1
        self.events.append(("close", mesh.shape))

    def create_mesh_mapper(self, target: Any, config: Any) -> Any:
        if isinstance(target, StandInMesh):  # a mapper on a device mesh: the same one on its shape
            target = self._ttnn.MeshShape(*target.shape)
        return self._ttnn.create_mesh_mapper(target, config)

    def from_torch(self, data: Any, *, dtype: Any, layout: Any, device: Any, memory_config: Any, mesh_mapper: Any):
        self.events.append(("send", None if device is None else device.shape, memory_config is not None))
        return self._ttnn.from_torch(data, dtype=dtype, layout=layout, mesh_mapper=mesh_mapper)


class _OpPath:
    """ttnn.experimental -> ttnn.experimental.all_gather_async: the recorded op at the end."""

    def __init__(self, rec: Recording, real: Any, rest: list[str]) -> None:
        self._rec, self._real, self._rest = rec, real, rest

    def __getattr__(self, name: str) -> Any:
        if self._rest and name == self._rest[0]:
            return _OpPath(self._rec, getattr(self._real, name), self._rest[1:])
        return getattr(self._real, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._rec.called(args, kwargs)


def cut(vector: dict[str, Any]) -> dict[str, Any]:
    """The vector with its tensors' last two dims cut to at most MAX_TILE, the others to MAX_DIM."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict) and "tensor" in value and isinstance(value["tensor"].get("shape"), list):
            shape = [int(d) for d in value["tensor"]["shape"]]
            small = [min(d, MAX_DIM) for d in shape[:-2]] + [min(d, MAX_TILE) for d in shape[-2:]]
            return {"tensor": {**value["tensor"], "shape": small}}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return {**vector, "inputs": walk(vector["inputs"]), "kwargs": {k: walk(v) for k, v in vector["kwargs"].items()}}


def ring_index(chip: int, mesh: tuple[int, int], axis: Any) -> int:
    """A chip's place in its collective's ring (row-major chip index on the mesh)."""
    return chip % mesh[1] if axis == 1 else chip // mesh[1] if axis == 0 else chip


def main() -> None:
    job = msgpack.unpackb(sys.stdin.buffer.read(), raw=False)
    with contextlib.redirect_stdout(sys.stderr):
        import ttnn
    from sweeps.catalogue import lookup
    from sweeps.materialize import mesh_inputs, prepare
    from sweeps.meshplan import MeshPlanError, core_bounds, mesh_plan
    from sweeps.profiles import L1_SMALL_SIZE, get_profile
    from workers.device import DeviceBackend, whole_mesh_plan

    profile = get_profile(job["machine"])
    problems: list[str] = []
    counts = {"vectors": 0, "placements": 0, "layouts": 0, "collective_inputs": 0, "invalid": 0, "meshes": []}
    config = ttnn.DispatchCoreConfig()
    facts = {
        "dispatch": [config.type.name, config.axis.name],
        "chips": ttnn.get_num_devices(),
        "pcie": ttnn.GetNumPCIeDevices(),
        "arch": ttnn.get_arch_name(),
    }
    rec = Recording(ttnn, profile.grid)
    backend = DeviceBackend(rec, profile)
    seen: set[str] = set()
    meshes: set[tuple[int, int]] = set()

    def same(chip: Any, expected: Any) -> bool:
        got = ttnn.to_torch(chip)
        return got.shape == expected.shape and bool((got.double() == expected.double()).all())

    for item in job["vectors"]:
        vector, where = item["vector"], item["from"]
        try:
            plan = mesh_plan(profile, vector)
        except MeshPlanError:
            counts["invalid"] += 1
            continue
        traced = tuple(vector["mesh_shape"])
        inside = all(t <= m for t, m in zip(traced, plan.mesh_shape, strict=True))
        if not (plan.mesh_shape in profile.mesh_shapes and inside):
            problems.append(f"{where}: traced mesh {traced} not contained by opened {plan.mesh_shape}")
        if plan.shape != traced:
            problems.append(f"{where}: runs on {plan.shape}, traced on {traced}")
        x, y = core_bounds(vector)
        if not (x < plan.grid[0] and y < plan.grid[1]) or plan.grid not in [d.grid for d in profile.dispatch]:
            problems.append(f"{where}: core ({x},{y}) outside the plan's grid {plan.grid}")
        if (plan.fabric is None) != (plan.mesh_shape[0] * plan.mesh_shape[1] == 1):
            problems.append(f"{where}: fabric {plan.fabric} on a {plan.mesh_shape} mesh")
        if plan.l1_small_size != L1_SMALL_SIZE:
            problems.append(f"{where}: L1_SMALL {plan.l1_small_size}")
        counts["vectors"] += 1
        meshes.add(traced)
        opdef = lookup(vector["op"])
        small = cut(vector)
        try:
            prepared = prepare(ttnn, opdef, small)
            inputs = mesh_inputs(opdef, small, prepared, plan.shape)
        except Exception as exc:  # noqa: BLE001 - reported as a problem of the vector
            problems.append(f"{where}: preparing its inputs raised {type(exc).__name__}: {exc}")
            continue
        mesh = StandInMesh(ttnn, plan.shape, plan.grid)  # what backend._mesh_for gives (opens: below)
        for slot, tensor in prepared.tensors.items():
            counts["placements"] += item["real"]
            collective = opdef.collective and slot == "0" and bool(prepared.device_inputs)
            key = json.dumps([tensor["shape"], tensor["dtype"], tensor["layout"], tensor.get("placement"),
                              tensor.get("storage"), plan.shape])  # fmt: skip
            if not collective and key in seen:
                continue
            seen.add(key)
            counts["layouts" if not collective else "collective_inputs"] += 1
            mark = len(rec.events)
            try:
                sent = backend.send(tensor, inputs[slot], mesh)
                chips = ttnn.get_device_tensors(sent)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{where} input {slot}: sending raised {type(exc).__name__}: {str(exc)[:300]}")
                continue
            event = rec.events[mark]
            host = tensor.get("storage") == "HOST"
            if (event[1] is None) != host or (host and event[2]):
                problems.append(f"{where} input {slot}: storage {tensor.get('storage')} sent as {event}")
            if len(chips) != plan.shape[0] * plan.shape[1]:
                problems.append(f"{where} input {slot}: {len(chips)} chips for a {plan.shape} mesh")
                continue
            for chip, got in enumerate(chips):
                if collective:
                    axis = small["kwargs"].get("cluster_axis")
                    data = prepared.device_inputs[ring_index(chip, plan.shape, axis)]
                else:
                    data = prepared.originals[slot]
                expected = ttnn.to_torch(ttnn.from_torch(data, dtype=ttnn.DataType[tensor["dtype"]],
                                                         layout=ttnn.Layout[tensor["layout"]]))  # fmt: skip
                if not same(got, expected):
                    problems.append(f"{where} input {slot}: chip {chip} does not hold its data")
                    break
    backend.close()
    topology_events = []
    for vectors in job["topologies"]:  # each: a fresh backend through the plans of these vectors
        rec = Recording(ttnn, profile.grid)
        backend = DeviceBackend(rec, profile)
        plans = [whole_mesh_plan(profile)]
        for vector in vectors:
            plans.append(mesh_plan(profile, vector))
            backend._mesh_for(plans[-1])
        backend.close()
        topology_events.append({"events": [list(e) for e in rec.events], "plans": [
            [list(p.mesh_shape), p.fabric, p.dispatch_core_type, p.dispatch_core_axis] for p in plans]})  # fmt: skip
        if ttnn.get_fabric_config().name != "DISABLED":
            problems.append(f"fabric {ttnn.get_fabric_config().name} left set after the close")
    runs = []
    for vector in job.get("runs", []):  # whole vectors through DeviceBackend.run, the op recorded
        small = cut(vector)
        plan = mesh_plan(profile, small)
        rec = Recording(ttnn, plan.grid, small["op"])
        backend = DeviceBackend(rec, profile)
        outcome = backend.run(lookup(small["op"]), small)
        backend.close()
        kept = [list(e) for e in rec.events if e[0] in ("op", "sync", "semaphore", "send")]
        runs.append({"status": outcome["status"], "message": outcome.get("message", ""), "events": kept})
    counts["meshes"] = sorted(meshes)
    result = {"problems": problems, "counts": counts, "facts": facts, "topologies": topology_events, "runs": runs}
    print("\n" + MARK + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
