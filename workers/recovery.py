"""Device health and recovery after an infrastructure fault (a hang or a crash in the executor).

GOOD -> UNKNOWN after any fault -> reset command -> fresh executor -> health-check vector ->
GOOD, or BAD when the reset or the health check fails. A BAD device set is quarantined by the
daemon: it stops consuming and its chunk goes back to the queue, until a person releases it
(`sweepctl workers --release NAME`). LAVA's device health model, with Swarming's rule that a
device never keeps running work after it failed its own check.

The reset command is the profile's (`tt-smi -r`, Galaxy's `tt-smi -glx_reset_auto`); the
emulated backend has no device, so it resets nothing unless SWEEPCTL_RESET_COMMAND says
otherwise (deployments and the fault tests set it).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from typing import Any

from sweeps import status
from sweeps.nightly import DRAM, tensor
from sweeps.profiles import MachineProfile
from sweeps.vector import make_vector, payload

GOOD, UNKNOWN, BAD = "GOOD", "UNKNOWN", "BAD"
RESET_TIMEOUT = 300.0
RESET_ENV = "SWEEPCTL_RESET_COMMAND"
HEALTH_CHECK = "health_check"  # the health-check vector's suite


def reset_command(profile: MachineProfile, backend: str, devices: list[int]) -> list[str]:
    """The reset of this worker's PCIe devices only (`tt-smi -r 0,1,2,3`): several workers may share
    a host (--devices). A Galaxy resets as a whole (profiles.reset_scope)."""
    override = os.environ.get(RESET_ENV)
    if override is not None:
        return shlex.split(override)
    return profile.reset_for(devices) if backend != "emulated" else []


def reset(profile: MachineProfile, backend: str, devices: list[int]) -> str | None:
    """Run the reset command; why it failed, or None."""
    command = reset_command(profile, backend, devices)
    if not command:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=RESET_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"reset {' '.join(command)} failed: {exc}"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        return f"reset {' '.join(command)} exited {done.returncode} {tail[0]}".strip()
    return None


def health_check_vector(profile: MachineProfile) -> dict[str, Any]:
    """A small bfloat16 add sharded over every chip of the mesh: it must PASS, and on a device every
    chip's output must equal chip 0's (workers/device.py; tt-metal's canary, mesh_tensor_utils.py
    device_canary, was added after a device timeout gave all-zero readbacks booked as op failures)."""
    a = tensor([1, 1, 32, 32], "BFLOAT16", DRAM)
    a["tensor"]["placement"] = {"placements": ["shard(0)"], "distribution_shape": [profile.chips],
                                "mesh_shape": list(profile.mesh_shape)}  # fmt: skip
    return make_vector("ttnn.add", HEALTH_CHECK, profile.name, list(profile.mesh_shape), [a, a], {}, 60.0)


@dataclass
class RecoveryResult:
    health: str
    message: str


def recover(executor: Any, profile: MachineProfile, backend: str) -> RecoveryResult:
    """Reset the devices, respawn the executor, run the health check. The executor is dead on entry."""
    executor.kill()
    failed = reset(profile, backend, executor.devices)
    if failed is not None:
        return RecoveryResult(BAD, failed)
    try:
        executor.start()
    except Exception as exc:  # the device did not open again
        return RecoveryResult(BAD, f"executor did not reopen after reset: {exc}")
    outcome = executor.run(payload(health_check_vector(profile)), 60.0)
    if outcome["status"] != status.PASS:
        return RecoveryResult(BAD, f"health check {outcome['status']}: {outcome.get('message', '')}")
    return RecoveryResult(GOOD, "reset and health check passed")
