"""Cancel is final: once a run is canceled nothing of it starts, the vector running is killed and
booked CANCELED, and what the worker claimed or still holds is booked CANCELED too.

Hooks: after a claim (`seen`: a claim found the run canceled), heartbeat and before a vector
(`kill`: the running vector is marked to be killed, once), after an outcome (`outcome`: a killed
vector's outcome is CANCELED), on chunk end (`stops`: claim and start nothing more of the run).
The heartbeat thread and the chunk's thread share one Cancel."""

from __future__ import annotations

from typing import Any

from sweeps import status

KILLED = "killed while running: the run was canceled"
CLAIMED = "the run was canceled"  # claimed by this worker, not started
UNRUN = "the run was canceled before this vector ran"


class Cancel:
    def __init__(self) -> None:
        self.run: str | None = None  # a claim found the run of the chunk canceled
        self.killing: tuple[str, str] | None = None  # (run, vector) killed because its run was canceled

    def start_chunk(self) -> None:
        self.run = None

    def seen(self, run_id: str) -> None:
        self.run = run_id

    def stops(self, run_id: str) -> bool:
        return self.run == run_id

    def kill(self, running: tuple[str, str]) -> bool:
        """Mark the running (run, vector) to be killed; True when the caller must kill it now
        (False when a kill is already under way)."""
        if self.killing is not None:
            return False
        self.killing = running
        return True

    def outcome(self, run_id: str, vector_id: str, outcome: dict[str, Any]) -> dict[str, Any]:
        """The outcome to book for a vector that just ended: CANCELED when the kill was for it."""
        if self.killing != (run_id, vector_id):
            return outcome
        self.run = run_id
        return {"status": status.CANCELED, "message": KILLED}

    def killed(self) -> None:
        """The executor is gone (or the chunk ended): no kill is under way."""
        self.killing = None
