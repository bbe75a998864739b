"""How a vector's run becomes an outcome, for both backends: PCC against the golden, the exception
the op call raised (FAIL_OP / FAIL_L1_OOM), or sweepctl's own failure (ERROR).

Only what is raised inside `op_call()` is the op's: a backend puts the ttnn op call there (and
nothing else), and runs the whole vector under `judged`. Anything raised anywhere else — reading
an argument, building inputs, converting values, the golden, reading the output back, comparing —
is ERROR, with the exception and the innermost frame of sweepctl's own code, so the report says
whose bug it is and where. The emulated backend has no op call: its golden stands in for the op,
so a golden that cannot take the traced call is an ERROR too. The same line holds when the executor
dies or hangs instead of raising: `op_call()` marks the executor's stage cell OP (workers/stage.py),
and only a death or timeout there is CRASH / HANG. Quitting a debugger (`q` at a breakpoint, under
`sweepctl run`) is no outcome at all: it goes on up (raise_if_debugger_quit).
"""

from __future__ import annotations

import bdb
import contextlib
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sweeps import status
from sweeps.pcc import passes
from sweeps.validate import ttnn_reason
from workers import stage

_OOM_MARKERS = (
    "Out of Memory",
    "out of memory",
    "Not enough space to allocate",
    "Statically allocated circular buffers",
)
_ROOT = Path(__file__).resolve().parents[1]
OUR_PACKAGES = ("tracer", "sweeps", "broker", "workers")  # sweepctl's own code, for an ERROR's frame
MESSAGE_LIMIT = 2000


class OpRaised(Exception):
    """What the op call itself raised (`cause`): the one kind of exception that is the op's failure."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


@contextlib.contextmanager
def op_call() -> Iterator[None]:
    """Around the ttnn op call (its warm-up and its device synchronize too): what it raises is the op's,
    and so is a death or a hang in it (the executor's stage is OP meanwhile)."""
    with stage.at(stage.OP):
        try:
            yield
        except Exception as exc:
            raise OpRaised(exc) from exc


def judged(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A backend's outcome for one vector: `run()`'s, FAIL_OP / FAIL_L1_OOM when the op call raised,
    ERROR when anything else did."""
    try:
        return run()
    except OpRaised as exc:
        return op_failure(exc.cause)
    except Exception as exc:
        return our_error(exc)


def raise_if_debugger_quit(exc: BaseException) -> None:
    """Raise `exc` again when it is a debugger's quit (bdb.BdbQuit): the person debugging stopped the
    run, which is neither the op's failure nor sweepctl's, so no handler may turn it into a verdict."""
    if isinstance(exc, bdb.BdbQuit):
        raise exc


def op_failure(exc: BaseException) -> dict[str, Any]:
    """FAIL_L1_OOM when ttnn could not allocate, FAIL_OP otherwise; the message is ttnn's human line."""
    raise_if_debugger_quit(exc)
    message = f"{type(exc).__name__}: {ttnn_reason(exc)}"[:MESSAGE_LIMIT]
    failed = status.FAIL_L1_OOM if any(m in str(exc) for m in _OOM_MARKERS) else status.FAIL_OP
    return {"status": failed, "pcc": None, "message": message, "e2e_ms": None}


def our_error(exc: BaseException) -> dict[str, Any]:
    """ERROR: sweepctl failed outside the op call. `Type: message [path:line in function]`, the frame
    being the innermost one in sweepctl's own code (ttnn's and torch's frames say less about the fix)."""
    raise_if_debugger_quit(exc)
    where = our_frame(exc)
    text = f"{type(exc).__name__}: {ttnn_reason(exc)}"
    suffix = f" [{where}]" if where else ""
    return {"status": status.ERROR, "pcc": None, "message": text[: MESSAGE_LIMIT - len(suffix)] + suffix,
            "e2e_ms": None}  # fmt: skip


def our_frame(exc: BaseException) -> str:
    """`sweeps/materialize.py:123 in prepare`: the innermost traceback frame under tracer/, sweeps/,
    broker/ or workers/, or "" when none is."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        try:
            relative = Path(frame.filename).resolve().relative_to(_ROOT)
        except ValueError:
            continue
        if relative.parts[0] in OUR_PACKAGES:
            return f"{relative.as_posix()}:{frame.lineno} in {frame.name}"
    return ""


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
