"""Run lifecycle after enqueue: cancel (and, with `enqueue --expires`, expiry).

Cancel marks the run canceled and gives every vector that has neither a final record nor a live
lease a CANCELED final record at once (so queued chunks skip them wherever they are); a vector
running right now is killed by its worker, whose heartbeat sees the state, and booked CANCELED
there. Expiry is checked by workers when they claim a chunk: vectors of an expired run are
booked EXPIRED instead of run.
"""

from __future__ import annotations

import time
from typing import Any

from broker.coordinator import run_meta
from broker.keys import Keys
from broker.results import Results, make_record
from sweeps import status
from sweeps.vector import decode
from tracer.errors import InputError


def cancel(redis: Any, keys: Keys, run_id: str) -> dict[str, int]:
    if run_meta(redis, keys, run_id) is None:
        raise InputError(f"run {run_id}", "no such run in this Redis (see `sweepctl runs`)")
    redis.hset(keys.run(run_id), "state", "canceled")
    finals = {k.decode() for k in redis.hkeys(keys.final(run_id))}
    results = Results(redis, keys)
    now = time.time()
    ops, running = [], 0
    for vector_id, payload in redis.hscan_iter(keys.vectors(run_id), count=1000):
        vid = vector_id.decode()
        if vid in finals:
            continue
        if redis.exists(keys.lease(run_id, vid)):
            running += 1
            continue
        outcome = {"status": status.CANCELED, "message": "the run was canceled before this vector ran"}
        ops.append(results.finish_op(make_record(decode(payload), run_id, 0, outcome, backend="coordinator",
                                                 start=now, end=now)))  # fmt: skip
    for start in range(0, len(ops), 1000):
        results.write(run_id, ops[start : start + 1000])
    return {"canceled": len(ops), "running": running, "already_final": len(finals)}
