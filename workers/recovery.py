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


def reset_command(profile: MachineProfile, backend: str) -> list[str]:
    override = os.environ.get(RESET_ENV)
    if override is not None:
        return shlex.split(override)
    return list(profile.reset_command) if backend != "emulated" else []


def health_check_vector(profile: MachineProfile) -> dict[str, Any]:
    """A small bfloat16 add on the whole mesh: it must PASS for the devices to go back to work."""
    a = tensor([1, 1, 32, 32], "BFLOAT16", DRAM)
    return make_vector("ttnn.add", "health_check", profile.name, list(profile.mesh_shape), [a, a], {}, 60.0)


@dataclass
class RecoveryResult:
    health: str
    message: str


def recover(executor: Any, profile: MachineProfile, backend: str) -> RecoveryResult:
    """Reset the devices, respawn the executor, run the health check. The executor is dead on entry."""
    executor.kill()
    command = reset_command(profile, backend)
    if command:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=RESET_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return RecoveryResult(BAD, f"reset {' '.join(command)} failed: {exc}")
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            return RecoveryResult(BAD, f"reset {' '.join(command)} exited {done.returncode} {tail[0]}".strip())
    try:
        executor.start()
    except Exception as exc:  # the device did not open again
        return RecoveryResult(BAD, f"executor did not reopen after reset: {exc}")
    outcome = executor.run(payload(health_check_vector(profile)), 60.0)
    if outcome["status"] != status.PASS:
        return RecoveryResult(BAD, f"health check {outcome['status']}: {outcome.get('message', '')}")
    return RecoveryResult(GOOD, "reset and health check passed")
