"""Machine profiles: the one home of every per-machine fact and of routing traced machine info
to a profile (tt-metal keeps its routing table in three files that drift apart).

Grids are `compute_with_storage_grid_size()` per chip with each system's default dispatch;
L1 is `get_max_worker_l1_unreserved_size()` (ttnn_api_facts.md §8, §9).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from tracer.errors import InputError
from tracer.machine import machine_label, normalize_series

UNKNOWN_MACHINE = "unknown"  # where configs no profile matches are booked
_MOCKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mock_clusters")
_WH_L1 = 1_463_968
_BH_L1 = 1_531_776
# L1_SMALL every device host opens with: tt-metal's sweeps use 79104 "to prevent OOM in model-traced
# sweeps" (tests/sweep_framework/sweep_utils/mesh_tensor_utils.py create_mesh_device). The allocator
# takes it from the top of each core's L1, so L1 buffers get l1_bytes_per_core - L1_SMALL_SIZE.
L1_SMALL_SIZE = 79104


@dataclass(frozen=True)
class Dispatch:
    """One dispatch-core placement a machine opens with, and the compute grid (x, y) it leaves
    per chip (ttnn_api_facts.md §8): dispatch cores taken from the worker grid are not compute."""

    type: str  # ttnn.DispatchCoreType member name: WORKER | ETH
    axis: str  # ttnn.DispatchCoreAxis member name: ROW | COL
    grid: tuple[int, int]


@dataclass(frozen=True)
class MachineProfile:
    name: str
    arch: str  # ttnn arch name
    board_type: str
    device_series: str
    card_count: int
    chips: int
    mesh_shape: tuple[int, int]
    l1_bytes_per_core: int  # usable worker L1 per core (get_max_worker_l1_unreserved_size)
    dram_alignment: int
    reset_command: tuple[str, ...]  # resets every board of the host
    mock_cluster: str  # file name under sweeps/mock_clusters
    timeout_scale: float = 1.0  # vector timeouts scale with the mesh (a 32-chip op takes longer to dispatch)
    # PCIe devices of the machine: what TT_VISIBLE_DEVICES and --devices count (not chips: an
    # N300 card is one PCIe device with 2 chips; its remote chip comes with it)
    pcie_devices: int = 1
    # the whole-machine mesh shapes it opens, preferred first; a vector's mesh runs in the first
    # that contains it (sweeps.meshplan)
    mesh_shapes: tuple[tuple[int, int], ...] = ()
    native_dispatch: tuple[str, str] = ("WORKER", "ROW")  # what DispatchCoreConfig() resolves to here
    dispatch: tuple[Dispatch, ...] = ()  # what sweepctl opens with, preferred first
    close_timeout: float = 10.0  # seconds to close the mesh before the executor is killed
    reset_scope: str = "devices"  # "devices": the reset can name PCIe devices; "host": it resets all

    @property
    def grid(self) -> tuple[int, int]:
        """The compute grid with the preferred dispatch."""
        return self.dispatch[0].grid

    @property
    def chips_per_pcie_device(self) -> int:
        return self.chips // self.pcie_devices

    def mesh_for(self, traced: tuple[int, int]) -> tuple[int, int] | None:
        """The mesh this machine opens for a vector traced on `traced`: the first of its mesh shapes
        that contains it (an exact match first); None when none does (the vector is NOT_RUN)."""
        if traced in self.mesh_shapes:
            return traced
        return next((m for m in self.mesh_shapes if traced[0] <= m[0] and traced[1] <= m[1]), None)

    def mesh_misfit(self, traced: tuple[int, ...]) -> str | None:
        """Why a vector traced on `traced` cannot run here, or None."""
        if len(traced) == 2 and self.mesh_for((traced[0], traced[1])) is not None:
            return None
        opens = ", ".join(f"{r}x{c}" for r, c in self.mesh_shapes)
        shape = "x".join(map(str, traced))
        return f"traced mesh {shape} fits no mesh a {self.name} opens ({opens})"

    def reset_for(self, devices: list[int]) -> list[str]:
        """The reset command for a worker that owns `devices` (PCIe ids; [] = the whole host).
        `tt-smi -r 0,1` resets only those boards; a Galaxy resets as a whole."""
        if devices and self.reset_scope == "devices":
            return [*self.reset_command, ",".join(map(str, devices))]
        return list(self.reset_command)

    @property
    def dram_banks(self) -> int:
        """A DRAM-sharded tensor's grid is (banks, 1): Wormhole 12 (6 channels x 2), Blackhole 8."""
        return 12 if self.arch == "wormhole_b0" else 8

    @property
    def queue(self) -> str:
        return f"sweeps.{self.name}"

    @property
    def mock_cluster_path(self) -> str:
        return os.path.join(_MOCKS, self.mock_cluster)

    def machine_info(self) -> dict[str, Any]:
        """Machine info in tt-metal's traced shape, for traces taken without tt-smi."""
        return {
            "board_type": self.board_type,
            "device_series": self.device_series,
            "card_count": self.card_count,
            "device_count": self.chips,
            "mesh_device_shape": list(self.mesh_shape),
        }


def _wh_n300_dispatch() -> tuple[Dispatch, ...]:
    """N300 chips (N300, T3K): ETH dispatch keeps the full 8x8 grid; WORKER takes a row or column."""
    return (Dispatch("ETH", "ROW", (8, 8)), Dispatch("WORKER", "ROW", (8, 7)), Dispatch("WORKER", "COL", (7, 8)))


PROFILES: dict[str, MachineProfile] = {
    p.name: p
    for p in (
        MachineProfile(
            "n150", "wormhole_b0", "Wormhole", "n150", 1, 1, (1, 1), _WH_L1, 32, ("tt-smi", "-r"), "n150.yaml",
            pcie_devices=1,
            mesh_shapes=((1, 1),),
            native_dispatch=("WORKER", "ROW"),
            dispatch=(Dispatch("WORKER", "ROW", (8, 8)), Dispatch("WORKER", "COL", (7, 9))),
        ),
        MachineProfile(
            "n300", "wormhole_b0", "Wormhole", "n300", 1, 2, (1, 2), _WH_L1, 32, ("tt-smi", "-r"), "n300.yaml",
            pcie_devices=1,
            mesh_shapes=((1, 2), (2, 1)),
            native_dispatch=("ETH", "ROW"),
            dispatch=_wh_n300_dispatch(),
        ),
        MachineProfile(
            "t3k", "wormhole_b0", "Wormhole", "n300", 4, 8, (2, 4), _WH_L1, 32, ("tt-smi", "-r"), "t3k.yaml",
            pcie_devices=4,
            mesh_shapes=((2, 4), (4, 2), (1, 8), (8, 1)),
            native_dispatch=("ETH", "ROW"),
            dispatch=_wh_n300_dispatch(),
        ),
        MachineProfile(
            "galaxy", "wormhole_b0", "Wormhole", "tt-galaxy-wh", 32, 32, (4, 8), _WH_L1, 32,
            ("tt-smi", "-glx_reset_auto"), "galaxy_6u.yaml",
            timeout_scale=2.0,
            pcie_devices=32,
            # a 6U Galaxy cannot open 2x16 / 16x2 (tt-metal all_gather_async_model_traced.invalidate_vector)
            mesh_shapes=((4, 8), (8, 4), (1, 32), (32, 1)),
            native_dispatch=("WORKER", "ROW"),
            # COL first: lead-model traces use cores with y up to 9 (tt-metal mesh_tensor_utils
            # _open_mesh_device_configured "Default to COL"); ROW when a grid needs x = 7. ETH
            # dispatch cannot be allocated on a Galaxy (same function), so it is not offered.
            dispatch=(Dispatch("WORKER", "COL", (7, 10)), Dispatch("WORKER", "ROW", (8, 9))),
            close_timeout=60.0,
            reset_scope="host",
        ),
        MachineProfile(
            "p150", "blackhole", "Blackhole", "p150b", 1, 1, (1, 1), _BH_L1, 64, ("tt-smi", "-r"), "p150.yaml",
            pcie_devices=1,
            mesh_shapes=((1, 1),),
            native_dispatch=("WORKER", "COL"),
            dispatch=(Dispatch("WORKER", "COL", (11, 10)),),  # Blackhole opens with its default only
        ),
        MachineProfile(
            "p300", "blackhole", "Blackhole", "p300a", 1, 2, (1, 2), _BH_L1, 64, ("tt-smi", "-r"), "p300.yaml",
            pcie_devices=2,
            mesh_shapes=((1, 2), (2, 1)),
            native_dispatch=("WORKER", "COL"),
            dispatch=(Dispatch("WORKER", "COL", (11, 10)),),
        ),
    )
}

_SERIES = {
    "n150": "n150",
    "p150b": "p150",
    "p150a": "p150",
    "p150": "p150",
    "p100a": "p150",
    "p300a": "p300",
    "p300": "p300",
    "tt-galaxy-wh": "galaxy",
}
_MESH = {
    (1, 1): "n150",
    (1, 2): "n300",
    (2, 1): "n300",
    (1, 4): "t3k",
    (4, 1): "t3k",
    (2, 4): "t3k",
    (4, 2): "t3k",
    (1, 8): "galaxy",
    (8, 1): "galaxy",
    (4, 8): "galaxy",
    (8, 4): "galaxy",
    (2, 16): "galaxy",
    (16, 2): "galaxy",
}


def get_profile(name: str) -> MachineProfile:
    try:
        return PROFILES[name.lower()]
    except KeyError:
        known = ", ".join(PROFILES)
        raise InputError(f"--machine {name}", f"unknown machine type (known: {known})") from None


def route(machine_info: dict[str, Any] | None) -> MachineProfile | None:
    """Traced machine info -> the profile that can run it; None when nothing identifies a machine.

    tt-galaxy-wh -> galaxy; n300 with 4 cards (or a 2x4 / 1x8 mesh) -> t3k; n300 -> n300;
    p150b -> p150; p300a -> p300; otherwise the mesh shape decides.
    """
    if not machine_info:
        return None
    series = normalize_series(machine_info.get("device_series"))
    mesh = machine_info.get("mesh_device_shape")
    mesh_key = tuple(mesh) if isinstance(mesh, list) and len(mesh) == 2 else None
    if series == "n300":
        cards = machine_info.get("card_count", 1)
        big_mesh = mesh_key is not None and mesh_key[0] * mesh_key[1] > 2
        return PROFILES["t3k" if cards == 4 or big_mesh else "n300"]
    if series in _SERIES:
        return PROFILES[_SERIES[series]]
    if mesh_key in _MESH:
        return PROFILES[_MESH[mesh_key]]
    board = str(machine_info.get("board_type") or "").lower()
    if board == "blackhole":
        return PROFILES["p150"]
    return None


@dataclass(frozen=True, slots=True)
class Routing:
    """Where the configs traced on one machine run: a profile (None: nothing matches), the mesh
    shape their vectors carry, and a label of the traced machine for NOT_RUN reasons."""

    profile: MachineProfile | None
    traced_on: str
    mesh_shape: tuple[int, ...]

    @property
    def machine(self) -> str:
        return self.profile.name if self.profile else UNKNOWN_MACHINE


def routing(machine_info: dict[str, Any] | None, override: MachineProfile | None = None) -> Routing:
    """The traced mesh shape is kept when it is a 2-D shape; `--machine` (override) takes its
    profile's mesh."""
    profile = override or route(machine_info)
    mesh = (machine_info or {}).get("mesh_device_shape") if override is None else None
    if profile is not None and not (isinstance(mesh, list) and len(mesh) == 2):
        mesh = list(profile.mesh_shape)
    return Routing(profile, machine_label(machine_info), tuple(mesh or (1, 1)))
