"""The emulated backend: no device. What a config's dtypes cost in accuracy, and whether ttnn's
host accepts it — not whether a kernel is right. Every result says backend=emulated.

In a process whose TT_METAL_MOCK_CLUSTER_DESC_PATH is the machine's descriptor: inputs are
rounded through ttnn's host `from_torch`/`to_torch` to their traced dtypes (real bfloat8_b /
bfloat4_b rounding), the golden runs on the rounded inputs, its output is rounded to the output
dtype, and that is compared by PCC with the golden on the unrounded fp32 inputs. The golden stands
in for the op, so an exception anywhere (a golden that cannot take the traced call included) is
sweepctl's own ERROR, never the op's FAIL_OP (workers/outcome.py); and since there is no op call, an
executor that dies or hangs here is never in stage OP either: ERROR, not CRASH / HANG (workers/stage.py).
"""

from __future__ import annotations

import time
from typing import Any

from sweeps.catalogue import OpDef
from sweeps.materialize import first_output, golden_function, no_device, prepare, quantize, reference, substitute
from sweeps.meshplan import MeshPlanError, invalid, mesh_plan
from sweeps.profiles import get_profile
from workers.outcome import judged, verdict

NAME = "emulated"


class EmulatedBackend:
    name = NAME

    def __init__(self, ttnn: Any, machine: str) -> None:
        self.ttnn = ttnn
        self.machine = machine
        self.profile = get_profile(machine)

    def run(self, opdef: OpDef, vector: dict[str, Any]) -> dict[str, Any]:
        """The golden stands in for the op, so nothing here is the op's: any exception is ERROR. A
        vector the device backend could not open a mesh for is INVALID here too (sweeps.meshplan)."""
        try:
            mesh_plan(self.profile, vector)
        except MeshPlanError as exc:
            return invalid(exc)
        return judged(lambda: self._run(opdef, vector))

    def _run(self, opdef: OpDef, vector: dict[str, Any]) -> dict[str, Any]:
        ttnn = self.ttnn
        golden = golden_function(ttnn, opdef)
        prepared = prepare(ttnn, opdef, vector)
        threshold, threshold_dtype = prepared.threshold(opdef)
        expected = reference(ttnn, golden, vector, prepared)[2]
        rounded = prepared.rounded(ttnn)
        ring = prepared.rounded_ring(ttnn)
        start = time.perf_counter()
        args, kwargs = substitute(ttnn, vector, rounded, no_device)
        output = first_output(golden(args, kwargs, {"device_inputs": ring}))
        output = quantize(ttnn, output.float() if output.is_floating_point() else output, prepared.output_dtype)
        e2e_ms = (time.perf_counter() - start) * 1000.0
        return {**verdict(expected, output, threshold, e2e_ms), "threshold_dtype": threshold_dtype}
