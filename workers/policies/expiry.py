"""Expiry: a run enqueued with `--expires` whose time has passed runs nothing more; a worker that
takes one of its chunks books the chunk EXPIRED (hook: on chunk start)."""

from __future__ import annotations

MESSAGE = "the run expired before it ran"


def due(expires: bytes | str | None, now: float) -> bool:
    """True when the run's `expires` field (unix s, absent for a run without expiry) is past."""
    return expires is not None and now > float(expires)
