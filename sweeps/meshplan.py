"""How a vector's mesh is opened: one pure decision (no device, no ttnn), shared by the device
backend, the repro files and the conformance tests, so what a device host will open is the
tested thing.

* The whole machine is opened, in the first of its profile's mesh shapes that contains the
  vector's traced shape; a smaller traced mesh runs on a submesh of it. tt-metal opens the full
  host mesh and carves a submesh out of it, because a submesh opened directly fails fabric router
  sync on its boundary links (tests/sweep_framework/sweep_utils/mesh_tensor_utils.py,
  `_full_host_mesh_for` / `_open_mesh_carving_submesh`, after tt-metal PR #52320).
* Fabric is set before every multi-chip open and cleared after the close: FABRIC_1D_RING for a
  collective traced with Topology.Ring, else FABRIC_1D for a line mesh and FABRIC_2D for a 2-D
  one (mesh_tensor_utils.py `fabric_config_for_mesh`; sweep_utils/ccl_common.py `device_context`
  sets DISABLED, then the config, then opens). Never on one chip: fabric on a 1-device mesh hangs
  in router sync (tt-metal #55519, #46019).
* Dispatch: the profile's placements in order of preference, the first whose compute grid holds
  every core the vector's L1 shard grids and program configs name (mesh_tensor_utils.py
  `dispatch_axis_for_grid`: a Galaxy opens COL (7x10) unless a grid needs x = 7, then ROW (8x9)).
* L1_SMALL: sweeps.profiles.L1_SMALL_SIZE, tt-metal's sweep default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sweeps import status
from sweeps.catalogue import lookup
from sweeps.profiles import L1_SMALL_SIZE, Dispatch, MachineProfile


class MeshPlanError(ValueError):
    """No mesh or dispatch of the machine holds the vector as traced (its cores need two dispatch
    grids, or its mesh fits no mesh shape: that one is NOT_RUN at enqueue already)."""


def invalid(exc: MeshPlanError) -> dict[str, Any]:
    """The outcome of a vector no plan can hold, on either backend: INVALID, decided on the host."""
    return {"status": status.INVALID, "pcc": None, "message": str(exc), "e2e_ms": None}


@dataclass(frozen=True)
class MeshPlan:
    mesh_shape: tuple[int, int]  # the full mesh opened: the profile's, in the orientation that contains the vector's
    submesh_shape: tuple[int, int] | None  # the traced mesh shape when smaller than the opened mesh, else None
    fabric: str | None  # ttnn.FabricConfig member set before open; None = DISABLED (left alone)
    dispatch_core_type: str  # ttnn.DispatchCoreType member name, "WORKER" | "ETH"
    dispatch_core_axis: str  # ttnn.DispatchCoreAxis member name, "ROW" | "COL"
    l1_small_size: int
    grid: tuple[int, int]  # the compute grid (x, y) per chip this dispatch leaves

    @property
    def shape(self) -> tuple[int, int]:
        """The mesh the vector runs on."""
        return self.submesh_shape or self.mesh_shape

    @property
    def open_key(self) -> tuple[Any, ...]:
        """An open mesh serves every vector whose plan has the same key; another key reopens."""
        return (self.mesh_shape, self.fabric, self.dispatch_core_type, self.dispatch_core_axis, self.l1_small_size)


def mesh_plan(profile: MachineProfile, vector: dict[str, Any]) -> MeshPlan:
    """The mesh, fabric and dispatch a device host opens for `vector`; MeshPlanError when no
    mesh shape or dispatch of the machine can hold it."""
    return plan_of(profile, traced_shape(vector), vector["op"], core_bounds(vector), topology(vector))


def plan_of(
    profile: MachineProfile, traced: tuple[int, int], op: str, bounds: tuple[int, int], topo: str | None
) -> MeshPlan:
    """mesh_plan from what it reads of a vector (the store index keeps `bounds` and `topo` per config,
    so expansion knows each vector's mesh without decoding it)."""
    opened = opened_mesh(profile, traced)
    dispatch = choose_dispatch(profile, bounds)
    return MeshPlan(
        mesh_shape=opened,
        submesh_shape=None if traced == opened else traced,
        fabric=fabric_for(opened, op, topo),
        dispatch_core_type=dispatch.type,
        dispatch_core_axis=dispatch.axis,
        l1_small_size=L1_SMALL_SIZE,
        grid=dispatch.grid,
    )


def open_key(
    profile: MachineProfile | None, mesh_shape: Any, op: str, bounds: tuple[int, int], topo: str | None
) -> tuple[Any, ...] | None:
    """The mesh a vector opens (MeshPlan.open_key) from what the store index keeps of it; None when
    no plan holds it (or no machine runs it): its own run says why."""
    if profile is None:
        return None
    try:
        return plan_of(profile, shape_2d(mesh_shape), op, bounds, topo).open_key
    except MeshPlanError:
        return None


def traced_shape(vector: dict[str, Any]) -> tuple[int, int]:
    return shape_2d(vector["mesh_shape"])


def shape_2d(mesh_shape: Any) -> tuple[int, int]:
    shape = [int(d) for d in mesh_shape]
    if len(shape) == 2:
        return shape[0], shape[1]
    count = 1
    for d in shape:
        count *= d
    return 1, count  # a 1-D mesh is a row


def opened_mesh(profile: MachineProfile, traced: tuple[int, int]) -> tuple[int, int]:
    opened = profile.mesh_for(traced)
    if opened is None:
        raise MeshPlanError(str(profile.mesh_misfit(traced)))
    return opened


def topology(vector: dict[str, Any]) -> str | None:
    """The ttnn.Topology the call names (a collective's Linear or Ring), if any."""
    values = list(vector["inputs"]) + list(vector["kwargs"].values())
    for value in values:
        if isinstance(value, dict) and value.get("enum") == "Topology":
            return str(value.get("value"))
    return None


def fabric_for(opened: tuple[int, int], op: str, topo: str | None) -> str | None:
    if opened[0] * opened[1] <= 1:
        return None
    opdef = lookup(op)
    if opdef is not None and opdef.collective and topo == "Ring":
        return "FABRIC_1D_RING"
    return "FABRIC_1D" if 1 in opened else "FABRIC_2D"


def core_bounds(vector: dict[str, Any]) -> tuple[int, int]:
    """The highest worker core (x, y) the vector names: ends of its L1 shard grids, and of its
    program configs' compute grids (a size: its last core is size - 1) and core-range lists.
    (-1, -1) when it names none. DRAM shard grids are banks, not cores."""
    bound = [-1, -1]

    def see(x: Any, y: Any) -> None:
        if isinstance(x, int) and isinstance(y, int):
            bound[0], bound[1] = max(bound[0], x), max(bound[1], y)

    def point(value: Any) -> tuple[Any, Any]:
        if isinstance(value, dict):
            return value.get("x"), value.get("y")
        if isinstance(value, list) and len(value) == 2:
            return value[0], value[1]
        return None, None

    def walk(value: Any) -> None:
        if isinstance(value, list):
            for item in value:
                walk(item)
            return
        if not isinstance(value, dict):
            return
        spec = value.get("shard_spec")
        if isinstance(spec, dict) and value.get("buffer_type") != "DRAM":
            for r in spec.get("grid") or []:
                if isinstance(r, dict):
                    see(*point(r.get("end")))
        size = value.get("compute_with_storage_grid_size")
        if size is not None:
            x, y = point(size)
            if isinstance(x, int) and isinstance(y, int):
                see(x - 1, y - 1)
        for key in ("sub_core_grids", "hop_cores"):
            ranges = value.get(key)
            for r in ranges if isinstance(ranges, list) else []:
                if isinstance(r, dict):
                    see(*point(r.get("end")))
        for item in value.values():
            walk(item)

    walk(vector["inputs"])
    walk(vector["kwargs"])
    return bound[0], bound[1]


def choose_dispatch(profile: MachineProfile, bounds: tuple[int, int]) -> Dispatch:
    for option in profile.dispatch:
        if bounds[0] < option.grid[0] and bounds[1] < option.grid[1]:
            return option
    grids = ", ".join(f"{d.type}/{d.axis} {d.grid[0]}x{d.grid[1]}" for d in profile.dispatch)
    raise MeshPlanError(f"core ({bounds[0]},{bounds[1]}) is outside every {profile.name} compute grid ({grids})")
