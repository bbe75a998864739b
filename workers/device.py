"""The ttnn device backend: real hardware. Cannot run here (no Tenstorrent device); it is kept thin.
Every decision before a device call is made by tested, device-free code: how the mesh is opened
(sweeps/meshplan.py), and the input data, dtypes, exact memory configs, what each chip gets,
argument conversion and the golden (sweeps/materialize.py, shared with the emulated backend).

The mesh is opened as the vector's plan says and kept while the next vector's plan has the same
open key (mesh shape, fabric, dispatch, L1_SMALL); a vector on a smaller mesh runs on a submesh.
Fabric is set before a multi-chip open (DISABLED first: metal refuses a transition from one live
config to another) and cleared after the close (SetFabricConfig is refused while devices are
open): tt-metal tests/sweep_framework/sweep_utils/ccl_common.py `device_context`.
Inputs go with `from_torch(..., memory_config=<exact traced>, mesh_mapper=...)` (a HOST-storage
input stays on the host); the op runs once to warm the program cache, then timed, each call with
fresh global semaphores (a semaphore handle is not reused across op invocations); one chip's output
is read back (`get_device_tensors(out)[0]`, as tt-metal's mesh_tensor_utils.mesh_tensor_to_torch, or
the first of the op's `mesh_coords`) and one chip that got the same inputs must agree with it
exactly (every chip, for the health check: tt-metal's mesh_tensor_utils.device_canary shards over
the whole mesh and wants exact agreement).
Only an exception of the op call itself is FAIL_OP / FAIL_L1_OOM; the rest is ERROR
(workers/outcome.py); a mesh that cannot be (re)opened is INFRA and ends the executor. Opening the
mesh, sending inputs, semaphores, the profiler's readout and reading the output back run in stage
DEVICE_IO (workers/stage.py): an executor that dies or hangs there is INFRA, not the op's CRASH /
HANG nor sweepctl's ERROR.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from sweeps import status
from sweeps.catalogue import OpDef
from sweeps.materialize import (
    MeshInput,
    first_output,
    golden_function,
    judged_chips,
    mesh_inputs,
    mesh_mapper,
    prepare,
    reference,
    substitute,
)
from sweeps.memconfig import to_ttnn
from sweeps.meshplan import MeshPlan, MeshPlanError, invalid, mesh_plan
from sweeps.profiles import MachineProfile
from workers import deviceperf
from workers.outcome import judged, op_call, raise_if_debugger_quit, verdict
from workers.recovery import HEALTH_CHECK
from workers.stage import DEVICE_IO, HOST, at

NAME = "ttnn"


class MeshUnavailable(Exception):
    """The mesh could not be opened: the device set's fault, never the vector's."""


def whole_mesh_plan(profile: MachineProfile) -> MeshPlan:
    """What the executor opens at start: the machine's mesh with its preferred dispatch."""
    return mesh_plan(profile, {"op": "", "mesh_shape": list(profile.mesh_shape), "inputs": [], "kwargs": {}})


class DeviceBackend:
    name = NAME

    def __init__(self, ttnn: Any, profile: MachineProfile) -> None:
        self.ttnn = ttnn
        self.profile = profile
        self.mesh: Any = None
        self.key: tuple[Any, ...] | None = None
        self.fabric_set = False
        self.broken = False  # a reopen failed: the executor stops after this vector
        self._submeshes: dict[tuple[int, int], Any] = {}
        self.open(whole_mesh_plan(profile))

    def open(self, plan: MeshPlan) -> None:
        ttnn = self.ttnn
        self.close()
        if plan.fabric is not None:
            ttnn.set_fabric_config(ttnn.FabricConfig.DISABLED)
            ttnn.set_fabric_config(ttnn.FabricConfig[plan.fabric])
            self.fabric_set = True
        try:
            self.mesh = ttnn.open_mesh_device(
                ttnn.MeshShape(*plan.mesh_shape),
                l1_small_size=plan.l1_small_size,
                dispatch_core_config=ttnn.DispatchCoreConfig(
                    ttnn.DispatchCoreType[plan.dispatch_core_type], ttnn.DispatchCoreAxis[plan.dispatch_core_axis]
                ),
            )
        except Exception:
            self._clear_fabric()
            raise
        self.key = plan.open_key

    def close(self) -> None:
        mesh, self.mesh, self.key = self.mesh, None, None
        self._submeshes.clear()
        if mesh is not None:
            self.ttnn.close_mesh_device(mesh)
        self._clear_fabric()

    def _clear_fabric(self) -> None:
        if self.fabric_set:
            self.fabric_set = False
            self.ttnn.set_fabric_config(self.ttnn.FabricConfig.DISABLED)

    def _mesh_for(self, plan: MeshPlan) -> Any:
        if plan.open_key != self.key:
            try:
                self.open(plan)
            except Exception as exc:
                raise_if_debugger_quit(exc)
                raise MeshUnavailable(f"could not open the {plan.mesh_shape} mesh: {exc}") from exc
        if plan.submesh_shape is None:
            return self.mesh
        if plan.submesh_shape not in self._submeshes:
            self._submeshes[plan.submesh_shape] = self.mesh.create_submesh(self.ttnn.MeshShape(*plan.submesh_shape))
        return self._submeshes[plan.submesh_shape]

    def _resolve(self, mesh: Any):
        """Devices are the vector's mesh; each call gets fresh global semaphores on its whole grid."""
        ttnn = self.ttnn

        def resolve(value: dict[str, Any]) -> Any:
            if "device" in value:
                return mesh
            if value.get("runtime_object") == "global_semaphore":
                grid = mesh.compute_with_storage_grid_size()
                cores = ttnn.CoreRangeSet(
                    [ttnn.CoreRange(ttnn.CoreCoord(0, 0), ttnn.CoreCoord(grid.x - 1, grid.y - 1))]
                )
                with at(DEVICE_IO):
                    return ttnn.create_global_semaphore(mesh, cores, 0)
            return None

        return resolve

    def send(self, tensor: dict[str, Any], mesh_input: MeshInput, mesh: Any) -> Any:
        """One input as traced: on the mesh with its exact memory config, or on the host (HOST storage)."""
        ttnn = self.ttnn
        host = tensor.get("storage") == "HOST"
        mc = tensor.get("memory_config")
        dtype, layout = ttnn.DataType[tensor["dtype"]], ttnn.Layout[tensor["layout"]]
        memory_config = to_ttnn(ttnn, mc) if mc and not host else None
        mapper = mesh_mapper(ttnn, mesh, mesh_input)
        with at(HOST if host else DEVICE_IO):  # to the device, its host conversion included (one call)
            return ttnn.from_torch(mesh_input.data, dtype=dtype, layout=layout, device=None if host else mesh,
                                   memory_config=memory_config, mesh_mapper=mapper)  # fmt: skip

    def run(self, opdef: OpDef, vector: dict[str, Any]) -> dict[str, Any]:
        """Only the op call (warm-up and timed, with their synchronize) can be the op's failure;
        building tensors, the golden, reading the output back and PCC are sweepctl's (ERROR)."""
        try:
            plan = mesh_plan(self.profile, vector)
        except MeshPlanError as exc:
            return invalid(exc)
        try:
            with at(DEVICE_IO):
                mesh = self._mesh_for(plan)
        except MeshUnavailable as exc:
            self.broken = True
            return {"status": status.INFRA, "pcc": None, "message": str(exc)[:2000], "e2e_ms": None}
        return judged(lambda: self._run(opdef, vector, plan, mesh))

    def _run(self, opdef: OpDef, vector: dict[str, Any], plan: MeshPlan, mesh: Any) -> dict[str, Any]:
        ttnn = self.ttnn
        golden = golden_function(ttnn, opdef)
        prepared = prepare(ttnn, opdef, vector)
        threshold, threshold_dtype = prepared.threshold(opdef)
        ref_args, ref_kwargs, expected = reference(ttnn, golden, vector, prepared)
        op = ttnn
        for part in opdef.name.split(".")[1:]:
            op = getattr(op, part)
        inputs = mesh_inputs(opdef, vector, prepared, plan.shape)
        device_tensors = {slot: self.send(t, inputs[slot], mesh) for slot, t in prepared.tensors.items()}
        resolve = self._resolve(mesh)
        args, kwargs = substitute(ttnn, vector, device_tensors, resolve)
        with op_call():
            op(*args, **kwargs)  # warm-up: compiles and fills the program cache
            ttnn.synchronize_device(mesh)
        args, kwargs = substitute(ttnn, vector, device_tensors, resolve)  # fresh semaphores
        with at(DEVICE_IO):
            deviceperf.drain(ttnn, mesh)
        start = time.perf_counter()
        with op_call():
            output = first_output(op(*args, **kwargs))
            ttnn.synchronize_device(mesh)
        e2e_ms = (time.perf_counter() - start) * 1000.0
        judged, peers = judged_chips(opdef, vector, plan.shape, every=vector["suite"] == HEALTH_CHECK)
        with at(DEVICE_IO):  # the profiler's readout and the output read back: the device's, not the op's
            perf = deviceperf.measured(ttnn, mesh)  # {} without the device profiler
            chips = ttnn.get_device_tensors(output)
            result = ttnn.to_torch(chips[judged])
            others = {peer: ttnn.to_torch(chips[peer]) for peer in peers}
        for peer, other in others.items():
            if not _same(result, other):
                return {
                    "status": status.FAIL_ACCURACY,
                    "pcc": None,
                    "threshold": threshold,
                    "threshold_dtype": threshold_dtype,
                    "message": f"chip {peer} disagrees with chip {judged} on the same inputs "
                    f"({_differ(result, other)})",
                    "e2e_ms": e2e_ms,
                }
        if opdef.view is not None:  # the golden is judged through the view already (materialize)
            result = opdef.view(result, ref_args, ref_kwargs)
        return {**verdict(expected, result, threshold, e2e_ms), "threshold_dtype": threshold_dtype, **perf}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit agreement, NaN where the other has NaN."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


def _differ(a: torch.Tensor, b: torch.Tensor) -> str:
    if a.shape != b.shape:
        return f"shapes {list(a.shape)} and {list(b.shape)}"
    diff = (a.double() - b.double()).abs()
    return f"{int((diff > 0).sum())} of {a.numel()} elements differ, max {float(diff.nan_to_num(0).max()):g}"
