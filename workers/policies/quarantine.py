"""Quarantine: after a hang or a crash the devices are reset and health-checked
(workers/recovery.py); a device set that fails that, or whose executor does not open, is BAD: the
worker stops consuming its machine's queue and gives the chunk back (Quarantined), until a person
releases it (`sweepctl workers --release NAME`). Hook: after an outcome that killed the executor.
The worker's health is kept in its registry row, where `sweepctl workers` reads it."""

from __future__ import annotations

from typing import Any

from broker.keys import Keys
from workers import recovery


class Quarantined(Exception):
    """The device set failed its reset or health check: stop consuming, give the chunk back."""


class Health:
    """A worker's device health (GOOD, UNKNOWN, BAD), kept in Redis as it changes."""

    def __init__(self, redis: Any, keys: Keys, worker: str) -> None:
        self.redis = redis
        self.keys = keys
        self.worker = worker
        self.state = recovery.UNKNOWN

    def set(self, health: str, why: str = "") -> None:
        self.state = health
        self.redis.hset(self.keys.worker(self.worker), mapping={"health": health, "health_reason": why})

    def settle(self, result: recovery.RecoveryResult) -> None:
        """Record a recovery's result; raise Quarantined unless the devices are GOOD again."""
        self.set(result.health, result.message)
        if result.health != recovery.GOOD:
            raise Quarantined(result.message)
