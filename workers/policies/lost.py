"""Lost attempts: a worker that died (kill -9, power) while running a vector leaves its attempt with
no record. The next claim of the vector sees that (broker/results.py) and this policy books the
lost attempt INFRA, not final; the vector runs again. When it has been lost MAX_LOST_ATTEMPTS
times the claim says DEAD and the vector ends INFRA, final (hook: after a claim)."""

from __future__ import annotations

from typing import Any

from broker.results import Claim
from sweeps import status

MAX_LOST_ATTEMPTS = 2  # a vector whose worker died in it twice is booked INFRA, not run again


def lost_attempt(claim: Claim) -> tuple[int, dict[str, Any]] | None:
    """The attempt before this claim's and its INFRA outcome, when its worker died in it; else None."""
    if not claim.lost:
        return None
    message = f"attempt {claim.attempt - 1}: its worker died while running it"
    return claim.attempt - 1, {"status": status.INFRA, "message": message}


def dead(claim: Claim) -> tuple[int, dict[str, Any]]:
    """A DEAD claim's attempt and its final INFRA outcome: not run again."""
    message = f"attempt {claim.attempt}: its worker died while running it, the second time: not run again"
    return claim.attempt, {"status": status.INFRA, "message": message}
