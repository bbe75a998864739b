"""Crash retry: an executor that dies in a vector may be the device's fault or the op's. The vector
gets one more try, on another live GOOD worker of the machine when there is one (the chunk names
this worker to `avoid`, and it hands such a chunk back MAX_HANDBACKS times at most), else here
after the reset; a vector that crashes twice ends CRASH (hook: after an outcome)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sweeps import status

MAX_HANDBACKS = 2  # times a chunk is handed back by a worker it asks to avoid


def retries(outcome: dict[str, Any], crashed_before: bool) -> bool:
    """True when this outcome is booked not final and the vector runs once more."""
    return outcome["status"] == status.CRASH and not crashed_before


def hands_back(name: str, avoid: Iterable[str], hops: int, another_worker: Callable[[], bool]) -> bool:
    """True when worker `name` gives a chunk back to the queue instead of running it: the chunk asks
    to avoid it, has not been handed back too often, and another live worker can take it
    (`another_worker` asks Redis, so only when the rest holds)."""
    return name in avoid and hops < MAX_HANDBACKS and another_worker()
