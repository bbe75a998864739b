"""The ttnn device backend: real hardware. Cannot run here (no Tenstorrent device); it is kept thin
and shares every step before the device call with the emulated backend (sweeps/materialize.py):
input data, dtypes, exact memory configs, argument conversion, the golden.

The mesh is opened once with the profile's shape and kept across vectors; a vector on a smaller
mesh runs on a submesh. Inputs are built at mesh size from the traced per-device shapes along the
placement's shard dims, sent with `from_torch(..., memory_config=<exact traced>, mesh_mapper=...)`;
the op runs once to warm the program cache, then timed; the output comes back with a composer.
Only an exception of the op call itself is FAIL_OP / FAIL_L1_OOM; the rest is ERROR (workers/outcome.py).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from sweeps.catalogue import OpDef
from sweeps.materialize import first_output, golden_function, prepare, substitute
from sweeps.memconfig import to_ttnn
from sweeps.profiles import MachineProfile
from workers import deviceperf
from workers.outcome import judged, op_call, verdict

NAME = "ttnn"
L1_SMALL_SIZE = 32768  # conv2d / pool / CCL need L1_SMALL (ttnn_api_facts.md §6)


def shard_dims(placement: dict[str, Any] | None) -> list[int | None]:
    """Per mesh axis, the tensor dim it shards (None = replicated)."""
    dims: list[int | None] = []
    for item in (placement or {}).get("placements") or []:
        dims.append(int(item[6:-1]) if item.startswith("shard(") else None)
    return dims


def mesh_input(data: torch.Tensor, placement: dict[str, Any] | None, mesh_shape: list[int]) -> torch.Tensor:
    """The whole-mesh tensor whose per-device pieces are `data`'s shape: repeated along shard dims."""
    repeats = [1] * data.dim()
    for axis, dim in enumerate(shard_dims(placement)):
        if dim is not None and axis < len(mesh_shape):
            repeats[dim] *= mesh_shape[axis]
    return data.repeat(*repeats)


class DeviceBackend:
    name = NAME

    def __init__(self, ttnn: Any, profile: MachineProfile) -> None:
        self.ttnn = ttnn
        self.profile = profile
        self.mesh = ttnn.open_mesh_device(ttnn.MeshShape(*profile.mesh_shape), l1_small_size=L1_SMALL_SIZE)
        self._submeshes: dict[tuple[int, int], Any] = {}

    def close(self) -> None:
        self.ttnn.close_mesh_device(self.mesh)

    def _mesh_for(self, shape: list[int]) -> Any:
        key = (shape[0], shape[1])
        if key == tuple(self.profile.mesh_shape):
            return self.mesh
        if key not in self._submeshes:
            self._submeshes[key] = self.mesh.create_submesh(self.ttnn.MeshShape(*key))
        return self._submeshes[key]

    def _mapper(self, mesh: Any, placement: dict[str, Any] | None) -> Any:
        ttnn = self.ttnn
        dims = shard_dims(placement)
        if not any(d is not None for d in dims):
            return ttnn.replicate_tensor_to_mesh_mapper(mesh)
        items = [ttnn.PlacementShard(d) if d is not None else ttnn.PlacementReplicate() for d in dims]
        return ttnn.create_mesh_mapper(mesh, ttnn.MeshMapperConfig(items, mesh.shape))

    def _resolve(self, mesh: Any):
        ttnn = self.ttnn

        def resolve(value: dict[str, Any]) -> Any:
            if "device" in value:
                return mesh
            if value.get("runtime_object") == "global_semaphore":
                grid = mesh.compute_with_storage_grid_size()
                cores = ttnn.CoreRangeSet(
                    [ttnn.CoreRange(ttnn.CoreCoord(0, 0), ttnn.CoreCoord(grid.x - 1, grid.y - 1))]
                )
                return ttnn.create_global_semaphore(mesh, cores, 0)
            return None

        return resolve

    def run(self, opdef: OpDef, vector: dict[str, Any]) -> dict[str, Any]:
        """Only the op call (warm-up and timed, with their synchronize) can be the op's failure;
        building tensors, the golden, reading the output back and PCC are sweepctl's (ERROR)."""
        return judged(lambda: self._run(opdef, vector))

    def _run(self, opdef: OpDef, vector: dict[str, Any]) -> dict[str, Any]:
        ttnn = self.ttnn
        golden = golden_function(ttnn, opdef)
        prepared = prepare(ttnn, opdef, vector)
        threshold, threshold_dtype = prepared.threshold(opdef)
        mesh = self._mesh_for(vector["mesh_shape"])
        resolve = self._resolve(mesh)
        ref_args, ref_kwargs = substitute(ttnn, vector, prepared.originals, resolve)
        reference = first_output(golden(ref_args, ref_kwargs, {"device_inputs": prepared.device_inputs}))
        op = ttnn
        for part in opdef.name.split(".")[1:]:
            op = getattr(op, part)
        device_tensors = {}
        for slot, tensor in prepared.tensors.items():
            mc = tensor.get("memory_config")
            device_tensors[slot] = ttnn.from_torch(
                mesh_input(prepared.originals[slot], tensor.get("placement"), vector["mesh_shape"]),
                dtype=ttnn.DataType[tensor["dtype"]],
                layout=ttnn.Layout[tensor["layout"]],
                device=mesh,
                memory_config=to_ttnn(ttnn, mc) if mc else None,
                mesh_mapper=self._mapper(mesh, tensor.get("placement")),
            )
        args, kwargs = substitute(ttnn, vector, device_tensors, resolve)
        with op_call():
            op(*args, **kwargs)  # warm-up: compiles and fills the program cache
            ttnn.synchronize_device(mesh)
        deviceperf.drain(ttnn, mesh)
        start = time.perf_counter()
        with op_call():
            output = first_output(op(*args, **kwargs))
            ttnn.synchronize_device(mesh)
        e2e_ms = (time.perf_counter() - start) * 1000.0
        perf = deviceperf.measured(ttnn, mesh)  # {} without the device profiler
        composer = ttnn.concat_mesh_to_tensor_composer(mesh, 0)
        result = ttnn.to_torch(output, mesh_composer=composer)
        if opdef.view is not None:  # the golden is judged through the view already (materialize)
            result = opdef.view(result, ref_args, ref_kwargs)
        per_device = result[: reference.shape[0]] if result.dim() and result.shape != reference.shape else result
        return {**verdict(reference, per_device, threshold, e2e_ms), "threshold_dtype": threshold_dtype, **perf}
