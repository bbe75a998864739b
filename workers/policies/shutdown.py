"""Warm shutdown (SIGTERM, `sweepctl down`, or a worker giving up on Redis): the vector running
finishes and is booked, the executor is fed nothing more, and the unstarted rest of the chunk goes
back to the queue (GivenBack: Celery requeues the message; finals are skipped when it comes back).
Waits on a Redis that does not answer end within STOP_FLUSH of the stop.
Hooks: before a vector (`ahead`), on chunk end (`hand_back`)."""

from __future__ import annotations

import time

STOP_FLUSH = 10.0  # s a stopping worker waits for records to reach an unreachable Redis
AHEAD = 2  # vectors in the executor at once: the running one and the next, waiting in its pipe


class GivenBack(Exception):
    """A warm shutdown stopped the chunk after the running vector: the rest goes back to the queue."""


class WarmShutdown:
    def __init__(self) -> None:
        self.stopping = False
        self.deadline = float("inf")  # stopping: no wait on an unreachable Redis goes past this (monotonic)

    def begin(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.deadline = time.monotonic() + STOP_FLUSH

    def ahead(self) -> int:
        """How many vectors the executor may hold: none more once stopping."""
        return 0 if self.stopping else AHEAD

    def hand_back(self, worker: str) -> None:
        """The executor is idle and the chunk has vectors left: when stopping, they go back."""
        if self.stopping:
            raise GivenBack(f"warm shutdown of {worker}")
