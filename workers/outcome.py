"""How an exception raised by an op call becomes a status and one readable message."""

from __future__ import annotations

from typing import Any

from sweeps import status
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
