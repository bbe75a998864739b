"""Test-only ops, run by the executor itself (no backend, no ttnn): present in the catalogue only
when SWEEPCTL_ENABLE_TEST_OPS=1, for benchmarks and fault-injection tests.

`sweepctl.test.noop` returns PASS at once, so a run of them measures the framework alone:
daemon, lease, executor round trip, record and aggregates.
"""

from __future__ import annotations

from typing import Any

from sweeps import status
from sweeps.catalogue import OpDef


def run_test_op(opdef: OpDef, vector: dict[str, Any]) -> dict[str, Any]:
    if opdef.name == "sweepctl.test.noop":
        return {"status": status.PASS, "pcc": 1.0, "threshold": 1.0, "message": "", "e2e_ms": 0.0}
    return {"status": status.NOT_RUN, "message": f"unknown test op {opdef.name}"}
