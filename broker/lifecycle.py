"""Run lifecycle after enqueue: cancel, retry (and, with `enqueue --expires`, expiry).

Cancel marks the run canceled, so no claim starts one of its vectors afterwards, and gives every
vector that has neither a final record nor a live lease a CANCELED final record at once (checked
and booked in one atomic step per batch, so a vector that finished meanwhile keeps its own
record); a vector running right now is killed by its worker, whose heartbeat sees the state, and
booked CANCELED there. Expiry is checked by workers when they claim a chunk: vectors of an expired run are
booked EXPIRED instead of run.
"""

from __future__ import annotations

import time
from typing import Any

from broker.app import RUN_CHUNK
from broker.coordinator import chunk_size, require_run
from broker.keys import Keys
from broker.results import Results, decode_record, parse_final, vector_fields
from sweeps import status
from tracer.errors import InputError


def cancel(redis: Any, keys: Keys, run_id: str) -> dict[str, int]:
    require_run(redis, keys, run_id)
    redis.hset(keys.run(run_id), "state", "canceled")  # from here on no claim starts a vector of the run
    finals = {k.decode() for k in redis.hkeys(keys.final(run_id))}
    results = Results(redis, keys)
    outcome = {"status": status.CANCELED, "message": "the run was canceled before this vector ran"}
    canceled, open_ = 0, 0
    batch: list[tuple[str, bytes]] = []
    scan = redis.hscan_iter(keys.vectors(run_id), count=1000)
    while True:
        item = next(scan, None)
        if item is not None and item[0].decode() not in finals:
            batch.append((item[0].decode(), item[1]))
        if batch and (item is None or len(batch) == 1000):
            # each vector is booked only if it is neither final nor leased at that instant (one Lua step)
            canceled += results.write(run_id, results.unrun_ops(run_id, batch, outcome, "", backend="coordinator"))[1]
            open_ += len(batch)
            batch = []
        if item is None:
            break
    return {"canceled": canceled, "running": open_ - canceled, "already_final": len(finals)}


# Decided at enqueue, never sent to a worker: a retry would not decide them again; fix the config.
# ERROR may be retried: it is sweepctl's own failure, so once the workers run a fixed sweepctl the
# vector deserves a first real run (the daemon itself never retries it: the same code fails the same way).
NOT_RETRIED = frozenset({status.INVALID, status.NOT_RUN})


def retry(app: Any, redis: Any, keys: Keys, run_id: str, statuses: list[str]) -> dict[str, Any]:
    """Give vectors whose final status is one of `statuses` a new attempt; their records stay, their
    counts of lost attempts start again.
    Their ids are noted (keys.retrying) before their finals go and forgotten once they are queued,
    so the vectors of a retry cut short in between (Ctrl-C, the broker away) are queued by the next
    retry of the run ("requeued"), instead of being neither final nor queued for good."""
    require_run(redis, keys, run_id)
    unknown = [s for s in statuses if s not in status.ALL]
    if unknown:
        raise InputError("--status", f"unknown status {unknown[0]} (known: {', '.join(status.ALL)})")
    refused = [s for s in statuses if s in NOT_RETRIED]
    if refused:
        raise InputError("--status", f"{refused[0]} vectors never reach a device; fix the config instead")
    wanted = set(statuses)
    chosen = [k.decode() for k, v in redis.hgetall(keys.final(run_id)).items() if parse_final(v)[0] in wanted]
    noted = keys.retrying(run_id)
    left = sorted(k.decode() for k in redis.smembers(noted))  # noted by a retry cut short
    if chosen:
        redis.sadd(noted, *chosen)
        redis.hdel(keys.lost(run_id), *chosen)  # a new round: the attempts lost before do not count against it
    results = Results(redis, keys)
    ops, by_machine = [], {}
    tried = dict(zip(chosen, redis.hmget(keys.attempts(run_id), chosen), strict=True)) if chosen else {}
    for vid in chosen:
        last = int(tried[vid] or 0)
        fields = [keys.record_field(vid, n) for n in range(last + 2)]
        found = [decode_record(r) for r in redis.hmget(keys.records(run_id), fields) if r is not None]
        record = max((r for r in found if r["status"] in wanted), key=lambda r: r["attempt"])
        ops.append(results.unfinal_op(record))
        by_machine.setdefault(record["machine"], []).append(vid)
    redis.hdel(keys.run(run_id), "state")  # a canceled run that is retried runs again
    for start in range(0, len(ops), 1000):
        results.write(run_id, ops[start : start + 1000])
    unqueued = _unqueued(redis, keys, run_id, [vid for vid in left if vid not in tried])
    for vid, machine in unqueued:
        by_machine.setdefault(machine, []).append(vid)
    chunks = 0
    with app.producer_or_acquire() as producer:
        for machine, ids in by_machine.items():
            size = chunk_size(len(ids))
            for start in range(0, len(ids), size):
                chunk = {"run_id": run_id, "machine": machine, "ids": ids[start : start + size]}
                app.send_task(RUN_CHUNK, kwargs=chunk, producer=producer)
                chunks += 1
    if chosen or left:
        redis.srem(noted, *chosen, *left)
    per_machine = {m: len(v) for m, v in sorted(by_machine.items())}
    return {"retried": len(chosen), "requeued": len(unqueued), "chunks": chunks, "per_machine": per_machine}


def _unqueued(redis: Any, keys: Keys, run_id: str, ids: list[str]) -> list[tuple[str, str]]:
    """(id, machine) of the vectors, noted by a retry cut short, that are still not final."""
    finals = redis.hmget(keys.final(run_id), ids) if ids else []
    open_ = [vid for vid, done in zip(ids, finals, strict=True) if done is None]
    payloads = redis.hmget(keys.vectors(run_id), open_) if open_ else []
    return [(vid, vector_fields(payload, "")[1]) for vid, payload in zip(open_, payloads, strict=True)]


def expire_due(redis: Any, keys: Keys, now: float | None = None) -> dict[str, int]:
    """Book EXPIRED every vector of a run past its `--expires` that has no final record and is not
    running (no lease), whether or not a worker of its machine ever comes; idempotent (finals are
    write-once). `status`, `watch`, `report`, `runs` and `enqueue` call it, so a run with no live
    worker still ends; a read-only user (the reporter ACL) books nothing and leaves it to the next
    command of one who may write. A run leaves the expiring set once every stored vector is final
    and no enqueue is writing it. Returns the vectors booked per run."""
    from redis.exceptions import NoPermissionError

    now = time.time() if now is None else now
    booked: dict[str, int] = {}
    for raw in redis.zrangebyscore(keys.expiring(), "-inf", now):
        try:
            booked[raw.decode()] = _expire(redis, keys, raw.decode())
        except NoPermissionError:
            break
    return booked


def _expire(redis: Any, keys: Keys, run_id: str) -> int:
    """expire_due for one run: the vectors it booked (Results.unrun_ops, as a worker books what it
    never ran; a stored vector this sweepctl cannot read is booked too)."""
    from broker.coordinator import PUBLISHING

    ids = [i.decode() for i in redis.hkeys(keys.vectors(run_id))]
    finals = redis.hmget(keys.final(run_id), ids) if ids else []
    open_ = [i for i, done in zip(ids, finals, strict=True) if done is None]
    results = Results(redis, keys)
    outcome = {"status": status.EXPIRED, "message": "the run expired before it ran"}
    booked = 0
    for start in range(0, len(open_), 1000):  # a vector someone holds the lease of is left to its holder
        batch = open_[start : start + 1000]
        vectors = list(zip(batch, redis.hmget(keys.vectors(run_id), batch), strict=True))
        booked += results.write(run_id, results.unrun_ops(run_id, vectors, outcome, "", backend="coordinator"))[1]
    if booked == len(open_) and not redis.hexists(keys.run(run_id), PUBLISHING):
        redis.zrem(keys.expiring(), run_id)
    return booked
