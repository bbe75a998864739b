"""Trace jobs in Redis: one per (model, machine type), queued on the machine's Celery queue and run
by the same worker daemons as sweep chunks (workers/tracejob.py).

A job's uid is its trace uid (the executions it adds to the store carry it). Its life, each step one
Lua script, so redeliveries and two workers never run or record it twice:

  enqueue  -> {p}:trace:U (state queued) and the message on sweeps.<machine>
  claim    -> refused when the result exists or another worker's lease holds it; else a lease (TTL,
              renewed by the worker's heartbeat), attempts + 1, state running
  finish   -> the msgpack result written once (SET NX), state done
  requeue  -> a running job whose lease lapsed (its worker died) and has no result is queued again,
              by whichever live worker or CLI sees it first; the second lost attempt ends `infra`

The result carries the deduplicated configs with their counts (never the per-call files): per
config [op, source, count, config_hash, arguments, extras], plus the outcome, per-test statuses,
host, machine info, ttnn version and duration. `store pull` merges it (broker/traces/pull.py).
"""

from __future__ import annotations

import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack

from broker.app import TRACE_MODEL
from broker.keys import Keys
from sweeps import status
from tracer.entry import TracedEntry

RESULT_SCHEMA = 1
MAX_LOST = 2  # attempts whose worker died in them: after the second the job ends `infra`
QUEUED, RUNNING, DONE = "queued", "running", "done"

# KEYS: trace, result, lease, running zset; ARGV: lease value, ttl, now, worker, uid, max lost attempts
_CLAIM = """
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HINCRBY', KEYS[1], 'redelivered', 1); return {'done', 0} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown', 0} end
local lease = redis.call('GET', KEYS[3])
if lease and lease ~= ARGV[1] then redis.call('HINCRBY', KEYS[1], 'redelivered', 1); return {'held', 0} end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if attempts >= tonumber(ARGV[6]) then return {'dead', attempts} end
redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[2])
attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[4], 'started', ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[5])
return {'run', attempts}
"""

# KEYS: trace, result, lease, running zset; ARGV: result, lease value, outcome, finished, uid
_FINISH = """
local written = 0
if redis.call('SET', KEYS[2], ARGV[1], 'NX') then
  redis.call('HSET', KEYS[1], 'state', 'done', 'outcome', ARGV[3], 'finished', ARGV[4])
  written = 1
end
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
redis.call('ZREM', KEYS[4], ARGV[5])
return written
"""

# KEYS: trace, result, lease, running zset; ARGV: uid
_REQUEUE = """
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('ZREM', KEYS[4], ARGV[1]); return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'queued')
redis.call('HINCRBY', KEYS[1], 'requeued', 1)
return 1
"""


@dataclass
class Job:
    """What a worker needs to run one model test under the tracer (the Celery message's kwargs)."""

    uid: str
    model: str
    machine: str
    test: str  # node id or script, relative to root
    root: str  # as the registry says it ($VARS expanded on the worker's host)
    timeout: float
    env: dict[str, str] = field(default_factory=dict)
    markers: str | None = None

    def as_kwargs(self) -> dict[str, Any]:
        return asdict(self)


def new_uid() -> str:
    return f"trace-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


def _keys4(keys: Keys, uid: str) -> list[str]:
    return [keys.trace(uid), keys.trace_result(uid), keys.trace_lease(uid), keys.traces_running()]


def send(app: Any, job: Job) -> None:
    with app.producer_or_acquire() as producer:
        app.send_task(TRACE_MODEL, kwargs=job.as_kwargs(), producer=producer,
                      kwargsrepr=f"{{uid: {job.uid}, model: {job.model}, machine: {job.machine}}}")  # fmt: skip


def enqueue(app: Any, redis: Any, keys: Keys, jobs: list[Job]) -> None:
    """Record every job, then publish them: the record comes first, so a worker's claim finds it."""
    now = time.time()
    pipe = redis.pipeline(transaction=True)
    for job in jobs:
        pipe.hset(keys.trace(job.uid), mapping={
            "model": job.model, "machine": job.machine, "job": msgpack.packb(job.as_kwargs()),
            "state": QUEUED, "enqueued": now, "attempts": 0, "host": socket.gethostname(),
        })  # fmt: skip
        pipe.zadd(keys.traces(), {job.uid: now})
    pipe.execute()
    for job in jobs:
        send(app, job)


@dataclass
class ClaimResult:
    action: str  # run | done | held | dead | unknown
    attempt: int
    lease: str


def claim(redis: Any, keys: Keys, uid: str, worker: str, token: str, ttl: int) -> ClaimResult:
    lease = f"{token}/{uuid.uuid4().hex[:8]}"
    args = [lease, ttl, time.time(), worker, uid, MAX_LOST]
    action, attempt = redis.register_script(_CLAIM)(keys=_keys4(keys, uid), args=args)
    return ClaimResult(action.decode() if isinstance(action, bytes) else action, int(attempt), lease)


def finish(redis: Any, keys: Keys, uid: str, result: dict[str, Any], lease: str) -> bool:
    """Write the result once; False when a result was there already (nothing changed)."""
    args = [encode_result(result), lease, result["outcome"], result["finished"], uid]
    return bool(redis.register_script(_FINISH)(keys=_keys4(keys, uid), args=args))


def requeue_lost(redis: Any, keys: Keys, app: Any, grace: float = 1.0) -> list[str]:
    """Queue again the running jobs whose worker is gone (lease lapsed, no result); their uids."""
    uids = [u.decode() for u in redis.zrangebyscore(keys.traces_running(), "-inf", time.time() - grace)]
    if not uids:
        return []
    script = redis.register_script(_REQUEUE)
    again = []
    for uid in uids:
        if script(keys=_keys4(keys, uid), args=[uid]):
            raw = redis.hget(keys.trace(uid), "job")
            if raw is not None:
                send(app, Job(**msgpack.unpackb(raw, raw=False)))
                again.append(uid)
    return again


# --- results ---------------------------------------------------------------------------------------


def encode_result(result: dict[str, Any]) -> bytes:
    return msgpack.packb({"schema": RESULT_SCHEMA, **result}, use_bin_type=True)


def decode_result(raw: bytes) -> dict[str, Any]:
    from tracer.store import bulk

    with bulk():  # a result of 100k configs is a large object graph: no cyclic GC passes over it meanwhile
        result = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    if not isinstance(result, dict) or result.get("schema", 0) > RESULT_SCHEMA:
        raise ValueError("a trace result of a newer sweepctl (or not a trace result)")
    return result


def result_configs(entries: list[TracedEntry]) -> list[list[Any]]:
    """A trace's entries as the result carries them: [op, source, count, config_hash, arguments,
    extras] each, identical (op, arguments, source) merged with their counts added."""
    from tracer.entry import argument_text

    merged: dict[tuple[str, bytes, Any], list[Any]] = {}
    for entry in entries:
        for run in entry.executions:
            key = (entry.op, argument_text(entry.arguments), run.get("source"))
            if key in merged:
                merged[key][2] += run["count"]
            else:
                merged[key] = [entry.op, run.get("source"), run["count"], entry.stored_hash, entry.arguments,
                               entry.extras]  # fmt: skip
    return list(merged.values())


def result_entries(result: dict[str, Any]) -> list[TracedEntry]:
    """The store entries of a result: one execution each, on the traced machine, under the trace uid."""
    from tracer.entry import normalize_execution

    info, uid = result.get("machine_info"), result["uid"]
    runs: dict[Any, dict[str, Any]] = {}  # source -> its execution, normalised once
    entries = []
    for op, source, count, digest, arguments, extras in result.get("configs") or []:
        base = runs.get(source)
        if base is None:
            base = runs[source] = normalize_execution({"source": source, "machine_info": info, "count": 1}, uid)
        run = {**base, "count": max(1, int(count))}
        entries.append(TracedEntry(op, arguments, [run], digest, extras=dict(extras) if extras else {}))
    return entries


def make_result(job: Job, outcome: str, message: str = "", **fields: Any) -> dict[str, Any]:
    assert outcome in status.TRACE_OUTCOMES
    now = time.time()
    base = {"uid": job.uid, "model": job.model, "machine": job.machine, "test": job.test, "outcome": outcome,
            "message": message, "tests": {}, "configs": [], "host": socket.gethostname(), "finished": now}  # fmt: skip
    return {**base, **fields}


# --- reading ---------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def jobs(redis: Any, keys: Keys, uids: list[str] | None = None) -> list[dict[str, Any]]:
    """Every trace job (or those named), oldest first: its hash as text, `uid` added."""
    if uids is None:
        uids = [_text(u) for u in redis.zrange(keys.traces(), 0, -1)]
    pipe = redis.pipeline(transaction=False)
    for uid in uids:
        pipe.hgetall(keys.trace(uid))
    rows = []
    for uid, row in zip(uids, pipe.execute() if uids else [], strict=True):
        if row:
            text = {_text(k): v if _text(k) == "job" else _text(v) for k, v in row.items()}
            rows.append({"uid": uid, **text})
    return rows


def result(redis: Any, keys: Keys, uid: str) -> dict[str, Any] | None:
    raw = redis.get(keys.trace_result(uid))
    return decode_result(raw) if raw is not None else None

