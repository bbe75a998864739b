"""Lease freshness: a vector goes to the executor only under a lease its worker knows it still holds.

A lease goes two ways, whatever the worker did meanwhile: it lapses LEASE_TTL s after it was last
confirmed, on Redis's clock, and a live worker frees it once this worker's heartbeat is older than
lost_after (broker/reclaim.py, in the step that takes the chunk over). A worker stopped (SIGSTOP) or
paused (a VM pause) that long finds on resume that a live worker queued its chunk again and claimed
its vectors. So the worker keeps when each lease was last confirmed (by the claim that took it, or
a renew) and when its heartbeat last landed, timed before the request was sent, by the wall clock
as well as the monotonic one (CLOCK_MONOTONIC may stand still in a VM pause; Redis's TTL runs on).
A claimed vector is confirmed again before it is sent when either is older than half its bound:
one heartbeat, then one renew for every vector the chunk holds unsent (in that order: a worker
taking this one over either sees the heartbeat and leaves the leases alone, or frees them before
the renew, which then finds them gone). One whose lease is gone is given back (released) and
claimed again, so the claim step decides: skipped when another worker holds it or it is final
(that worker books it; no record here), else a fresh claim of the same attempt.
Fresh leases cost nothing: the heartbeat renews them every few seconds, well within those halves.
The same rule bounds the executor, which is not frozen with its worker (its own session) and would
start the vector waiting in its pipe however late: the worker tells it (`publish`, the stage cell's
start_by: workers/stage.py) the wall-clock time until which every vector it holds stays fresh,
again after every claim, heartbeat, renew and change of what it holds; past it the executor starts
nothing, and the vector comes back to be confirmed like any claimed one.
Hooks: after a claim, a heartbeat and a renew (`take`, `beaten`, `renewed`), before a vector
(`stale`, `lost`), when the executor's vectors change (`executing`), after an outcome or a release
(`forget`). The heartbeat thread and the chunk's thread share one Leases.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

FRESH_SHARE = 0.5  # of a lease's TTL, of lost_after: confirmed within both, its vector is sent at once


class Stamp(NamedTuple):
    """A moment on both clocks: the wall clock sees a VM pause, the monotonic one a clock step back."""

    wall: float
    mono: float

    @classmethod
    def now(cls) -> Stamp:
        return cls(time.time(), time.monotonic())

    def age(self, now: Stamp) -> float:
        return max(now.wall - self.wall, now.mono - self.mono)

    def after(self, seconds: float) -> Stamp:
        return Stamp(self.wall + seconds, self.mono + seconds)

    def earlier(self, other: Stamp) -> Stamp:
        """The earlier moment of the two, on each clock."""
        return Stamp(min(self.wall, other.wall), min(self.mono, other.mono))

    def passed(self, now: Stamp) -> bool:
        """`now` is past this moment on either clock."""
        return now.wall > self.wall or now.mono > self.mono


class Leases:
    """The leases of the vectors this worker claimed and has not booked: key -> value, and when
    each was last confirmed (None: a renew found it taken over or lapsed)."""

    def __init__(self, ttl: float, lost_after: float, publish: Callable[[float], None] = lambda _: None) -> None:
        """`ttl`: the leases' TTL; `lost_after`: how long without a heartbeat before a live worker
        frees this one's leases (reclaim.lost_after of its heartbeat interval); `publish`: tells the
        executor its start-by time (called under the lock, so the last value told is the newest)."""
        self.fresh_for = ttl * FRESH_SHARE
        self.beat_fresh_for = lost_after * FRESH_SHARE
        self._held: dict[str, tuple[str, Stamp | None]] = {}
        self._beat: Stamp | None = None  # when this worker's heartbeat last landed
        self._executing: list[str] = []  # leases of the vectors in the executor: running, then queued
        self._publish = publish
        self._lock = threading.Lock()

    def beaten(self, at: Stamp) -> None:
        """This worker's heartbeat (sent at `at`) landed."""
        with self._lock:
            if self._beat is None or self._beat.age(at) > 0:
                self._beat = at
            self._start_by()

    def take(self, key: str, value: str, at: Stamp) -> None:
        """A claim (sent at `at`) took the lease `key` with `value`."""
        with self._lock:
            self._held[key] = (value, at)
            self._start_by()

    def executing(self, keys: list[str]) -> None:
        """The vectors of these leases are in the executor now (the running one, then those queued),
        told before a vector is sent and after one answered."""
        with self._lock:
            self._executing = keys
            self._start_by()

    def forget(self, key: str) -> None:
        """Booked or given back: not this worker's to renew any more."""
        with self._lock:
            self._held.pop(key, None)

    def held(self) -> list[tuple[str, str]]:
        """(key, value) of every lease held, for a renew."""
        with self._lock:
            return [(key, value) for key, (value, _) in self._held.items()]

    def renewed(self, sent: list[tuple[str, str]], lost: list[str], at: Stamp) -> None:
        """A renew of `sent`, sent at `at`, answered: each lease of it confirmed, unless `lost`
        (another worker holds it, or it lapsed). A lease claimed again meanwhile is left alone."""
        gone = set(lost)
        with self._lock:
            for key, value in sent:
                now = self._held.get(key)
                if now is None or now[0] != value:
                    continue
                if key in gone:
                    self._held[key] = (value, None)
                elif now[1] is not None and now[1].age(at) > 0:  # an older confirmation than this renew
                    self._held[key] = (value, at)
            self._start_by()

    def stale(self, key: str, now: Stamp | None = None) -> bool:
        """True when the lease must be confirmed again before its vector is sent: lost, last
        confirmed more than `fresh_for` s ago, or this worker's heartbeat older than `beat_fresh_for`."""
        now = now or Stamp.now()
        with self._lock:
            until = self._fresh_until(key)
        return until is None or until.passed(now)

    def _fresh_until(self, key: str) -> Stamp | None:
        """Until when the lease `key` counts as fresh: `fresh_for` after it was last confirmed and
        `beat_fresh_for` after the last heartbeat (None: lost, unknown or no heartbeat yet). Under the lock."""
        found, beat = self._held.get(key), self._beat
        if found is None or found[1] is None or beat is None:
            return None
        return found[1].after(self.fresh_for).earlier(beat.after(self.beat_fresh_for))

    def _start_by(self) -> None:
        """Publish when the first lease in the executor stops being fresh, on the wall clock (the
        executor's clock for a pause): -inf when one is lost, inf when none is held (booked, or no
        vector: a health check). Under the lock."""
        until = math.inf
        for key in self._executing:
            if key in self._held:
                fresh = self._fresh_until(key)
                until = min(until, fresh.wall if fresh is not None else -math.inf)
        self._publish(until)

    def lost(self, key: str) -> bool:
        """True when a renew found the lease taken over or lapsed, or it is not known here."""
        with self._lock:
            found = self._held.get(key)
        return found is None or found[1] is None
