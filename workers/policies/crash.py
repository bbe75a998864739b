"""Crash retry: an executor that dies in a vector may be the device's fault or the op's. The vector
gets one more try, on another live GOOD worker of the machine when there is one (the chunk names
this worker to `avoid`, and it hands such a chunk back MAX_HANDBACKS times at most), else here
after the reset; a vector that crashes twice ends CRASH (hook: after an outcome). The same one
retry goes to a vector whose executor died or hung outside the op but not in sweepctl's own work
(INFRA: moving tensors to or from the device, or not started yet: workers/stage.py); never to a
HANG, an ERROR, or an INFRA the executor reported itself."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sweeps import status
from workers.stage import EXECUTOR_GONE

MAX_HANDBACKS = 2  # times a chunk is handed back by a worker it asks to avoid


def retries(outcome: dict[str, Any], crashed_before: bool) -> bool:
    """True when this outcome is booked not final and the vector runs once more: the first attempt
    that took an executor down, in the op (CRASH) or on the device outside it (INFRA)."""
    gone = outcome["status"] == status.CRASH or (outcome["status"] == status.INFRA and outcome.get(EXECUTOR_GONE))
    return bool(gone) and not crashed_before


def hands_back(name: str, avoid: Iterable[str], hops: int, another_worker: Callable[[], bool]) -> bool:
    """True when worker `name` gives a chunk back to the queue instead of running it: the chunk asks
    to avoid it, has not been handed back too often, and another live worker can take it
    (`another_worker` asks Redis, so only when the rest holds)."""
    return name in avoid and hops < MAX_HANDBACKS and another_worker()
