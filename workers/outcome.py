"""How an op call's result becomes an outcome: PCC against the golden, or the exception it raised."""

from __future__ import annotations

from typing import Any

from sweeps import status
from sweeps.pcc import passes
from sweeps.validate import ttnn_reason

_OOM_MARKERS = (
    "Out of Memory",
    "out of memory",
    "Not enough space to allocate",
    "Statically allocated circular buffers",
)


def op_failure(exc: BaseException) -> dict[str, Any]:
    """FAIL_L1_OOM when ttnn could not allocate, FAIL_OP otherwise; the message is ttnn's human line."""
    message = f"{type(exc).__name__}: {ttnn_reason(exc)}"[:2000]
    failed = status.FAIL_L1_OOM if any(m in str(exc) for m in _OOM_MARKERS) else status.FAIL_OP
    return {"status": failed, "pcc": None, "message": message, "e2e_ms": None}


def verdict(reference: Any, output: Any, threshold: float, e2e_ms: float) -> dict[str, Any]:
    """PASS or FAIL_ACCURACY by PCC of the op's output against the fp32 golden."""
    ok, value = passes(reference, output, threshold)
    return {
        "status": status.PASS if ok else status.FAIL_ACCURACY,
        "pcc": value,
        "threshold": threshold,
        "message": "" if ok else f"PCC {value:.6f} below {threshold}",
        "e2e_ms": e2e_ms,
    }
