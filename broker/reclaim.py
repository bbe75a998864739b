"""A lost worker's chunk back on its queue within a minute, without waiting for Celery's visibility
timeout (6 h by default: a killed worker's message stays unacked in Redis until then).

Every worker records the chunk it is running (keys.held: run, machine, ids, the prefix of its lease
values, its heartbeat interval, its message's crashed vectors, hops and tries) before it claims a
vector of it, and deletes the record after the chunk's records are written, before the message is
acked. The heartbeat thread of every live worker looks for workers whose heartbeat is older than
registry.lost_after (three of their intervals and a margin) that still hold a chunk. The first to
take the record over (one Lua step that checks the heartbeat again, frees the lost worker's leases
and moves the record to keys.reclaiming, marked as taken over by it until a deadline, so two live
workers never both do it, and a worker that was only stopped and beats again either beat first, and
keeps its chunk, or finds its leases gone) publishes the chunk's vectors that are not final yet as a
new message, with the crashed vectors, hops and tries it had (a vector that crashed an executor once
gets no other crash attempt) and `avoid` naming the lost worker (a worker of that name hands it back
while another can take it), and only then deletes the entry (if its mark is still its own). A taker
that dies, or cannot reach the broker, between the two steps leaves the entry: once its deadline
passed, the next live worker takes it over again, whatever became of the lost worker's name (a new
worker of that name writes its own record under it). So at every moment either the record or the
new message exists.
Claims keep this idempotent: the vector the dead worker was running is booked INFRA and retried
once, and when Celery redelivers the original message hours later (or a slow taker and the one after
it both publish), every vector is final or leased and nothing runs twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from broker.app import RUN_CHUNK
from broker.keys import Keys
from broker.registry import LOST_MARGIN, clock, lost_after

# KEYS: workers zset, the held-chunk key, the reclaiming hash, the lease keys of its vectors; ARGV: worker
# name, the record as read, heartbeat cutoff, the lease-value prefix of the lost worker, the taker's mark.
# Returns the leases freed, or -1 when the worker beat since (alive after all) or another live worker
# took the record (or the worker finished with it).
_TAKE_OVER = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
if beat and tonumber(beat) >= tonumber(ARGV[3]) then return -1 end
local n = 0
for i = 4, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v and string.sub(v, 1, #ARGV[4]) == ARGV[4] then redis.call('DEL', KEYS[i]); n = n + 1 end
end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[5])
redis.call('DEL', KEYS[2])
return n
"""

# KEYS: the reclaiming hash; ARGV: the record, its mark as read, the new mark (or '' to delete the entry).
# Changes the entry only while its mark is the one read: 1 when it did.
_REMARK = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
return 1
"""

# KEYS: the worker's row (broker/registry.py), its held-chunk key; ARGV: the registry instance id of the
# writer, the record, 'NX' to write only when there is none. Writes only while the name is the writer's
# (or nobody's: a Redis that restarted without the row), so an old instance resumed after another took
# its name over never overwrites, or puts back, a record under it. 1 when the name is the writer's.
_HOLD = """
local owner = redis.call('HGET', KEYS[1], 'instance')
if owner and owner ~= ARGV[1] then return 0 end
if ARGV[3] == 'NX' then redis.call('SET', KEYS[2], ARGV[2], 'NX') else redis.call('SET', KEYS[2], ARGV[2]) end
return 1
"""

# KEYS: the held-chunk key; ARGV: the writer's lease-value prefix. Deletes the record only when it is
# the writer's own (taken over or not), never the one a new instance of the name wrote.
_UNHOLD = """
local raw = redis.call('GET', KEYS[1])
if raw and cmsgpack.unpack(raw)[4] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class Held:
    """The chunk a worker is running, as it recorded it."""

    run_id: str
    machine: str
    ids: list[str]
    holder: str  # the prefix of the worker's lease values (its name and incarnation)
    heartbeat_every: float
    crashed: list[str] = field(default_factory=list)  # the message's extras (workers/daemon.py take_chunk)
    hops: int = 0
    tries: int = 0

    def pack(self) -> bytes:
        fields = [self.run_id, self.machine, self.ids, self.holder, self.heartbeat_every]
        return msgpack.packb([*fields, self.crashed, self.hops, self.tries])

    @classmethod
    def unpack(cls, raw: bytes) -> Held:
        run_id, machine, ids, holder, every, *rest = msgpack.unpackb(raw, raw=False)
        return cls(run_id, machine, ids, holder, float(every), *rest)


def send_chunk(app: Any, run_id: str, machine: str, ids: list[str], **extra: Any) -> None:
    """Publish one chunk message to its machine's queue (`extra`: avoid, crashed, hops, tries)."""
    kwargs = {"run_id": run_id, "machine": machine, "ids": ids, **extra}
    with app.producer_or_acquire() as producer:
        app.send_task(
            RUN_CHUNK,
            kwargs=kwargs,
            producer=producer,
            kwargsrepr=f"{{run_id: {run_id}, machine: {machine}, {len(ids)} ids from {ids[0]}, {extra}}}",
        )


def hold(client: Any, keys: Keys, name: str, instance: str, record: bytes, put_back: bool = False) -> Any:
    """Record (on `client`, a connection or a pipeline) the chunk worker `name`'s `instance` runs; with
    `put_back` only when there is no record. Its reply: 1, or 0 when another instance holds the name."""
    return client.eval(_HOLD, 2, keys.worker(name), keys.held(name), instance, record, "NX" if put_back else "")


def unhold(redis: Any, keys: Keys, name: str, holder: str) -> bool:
    """Delete worker `name`'s held record if it is `holder`'s (its lease-value prefix)."""
    return bool(redis.eval(_UNHOLD, 1, keys.held(name), holder))


def reclaim(redis: Any, keys: Keys, app: Any, me: str, now: float | None = None) -> list[dict[str, Any]]:
    """Queue again the chunks of lost workers, and those whose taker lapsed before it queued them (see
    the module doc); what was queued, per chunk. `now`: Redis's clock (registry.clock), which the
    heartbeats are written at, unless a test says."""
    now = clock(redis) if now is None else now
    found = []
    for raw, mark in redis.hgetall(keys.reclaiming()).items():  # empty unless a taker failed or is at it
        name, taker, until = msgpack.unpackb(mark, raw=False)
        held = Held.unpack(raw)
        again = msgpack.packb([name, me, now + lost_after(held.heartbeat_every)])
        if until <= now and redis.eval(_REMARK, 1, keys.reclaiming(), raw, mark, again):
            found.append({**_queue(redis, keys, app, name, held, raw, again), "retaken_from": taker})
    stale = redis.zrangebyscore(keys.workers(), "-inf", now - LOST_MARGIN, withscores=True)
    stale = [(n.decode(), beat) for n, beat in stale if n.decode() != me]
    raws = redis.mget([keys.held(name) for name, _ in stale]) if stale else []
    take_over = redis.register_script(_TAKE_OVER)
    for (name, beat), raw in zip(stale, raws, strict=True):
        if raw is None:
            continue
        held = Held.unpack(raw)
        cutoff = now - lost_after(held.heartbeat_every)
        if beat >= cutoff:
            continue
        mark = msgpack.packb([name, me, now + lost_after(held.heartbeat_every)])
        leases = [keys.lease(held.run_id, vid) for vid in held.ids]
        work = [keys.workers(), keys.held(name), keys.reclaiming(), *leases]
        freed = take_over(keys=work, args=[name, raw, cutoff, held.holder, mark])
        if freed >= 0:  # else alive after all, or another live worker took it
            found.append({**_queue(redis, keys, app, name, held, raw, mark), "leases_freed": freed})
    return found


def _queue(redis: Any, keys: Keys, app: Any, name: str, held: Held, raw: bytes, mark: bytes) -> dict[str, Any]:
    """Publish the open vectors of lost worker `name`'s chunk taken over under `mark`, then drop the
    entry. A taker before this one may have published them too: claims make the copies harmless."""
    finals = redis.hmget(keys.final(held.run_id), held.ids) if held.ids else []
    open_ids = [vid for vid, done in zip(held.ids, finals, strict=True) if done is None]
    if open_ids:
        extra = {"crashed": held.crashed, "hops": held.hops, "tries": held.tries}
        send_chunk(app, held.run_id, held.machine, open_ids, avoid=[name], **extra)
    redis.eval(_REMARK, 1, keys.reclaiming(), raw, mark, "")  # queued: the entry is done with
    return {"worker": name, "run": held.run_id, "queued": len(open_ids)}
