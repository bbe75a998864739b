"""A lost worker's chunk back on its queue within a minute, without waiting for Celery's visibility
timeout (6 h by default: a killed worker's message stays unacked in Redis until then).

Every worker records the chunk it is running (keys.held: run, machine, ids, the prefix of its lease
values, its heartbeat interval, its message's crashed vectors, hops and tries) before it claims a
vector of it, and deletes the record after the chunk's records are written, before the message is
acked. The heartbeat thread of every live worker looks for workers whose heartbeat is older than
registry.lost_after (three of their intervals and a margin) that still hold a chunk. The first to
take the record over (one Lua step that checks the heartbeat again, frees the lost worker's leases
and marks the record as taken over by it until a deadline, so two live workers never both do it, and
a worker that was only stopped and beats again either beat first, and keeps its chunk, or finds its
leases gone) publishes the chunk's vectors that are not final yet as a new message, with the crashed
vectors, hops and tries it had (a vector that crashed an executor once gets no other crash attempt)
and `avoid` naming the lost worker (a worker of that name hands it back while another can take it),
and only then deletes the record (if it is still the one it marked). A taker that dies, or cannot
reach the broker, between the two steps leaves the marked record: once the mark's deadline passed,
the next live worker takes it over again. So at every moment either the record or the new message
exists.
Claims keep this idempotent: the vector the dead worker was running is booked INFRA and retried
once, and when Celery redelivers the original message hours later (or a slow taker and the one after
it both publish), every vector is final or leased and nothing runs twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import msgpack

from broker.app import RUN_CHUNK
from broker.keys import Keys
from broker.registry import LOST_MARGIN, clock, lost_after


def _freeing(first: int, prefix: str) -> str:
    """Lua: delete the leases named by KEYS[first..] whose value starts with `prefix`; n: how many."""
    return f"""
local n = 0
for i = {first}, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v and string.sub(v, 1, #{prefix}) == {prefix} then redis.call('DEL', KEYS[i]); n = n + 1 end
end
"""


# KEYS: workers zset, the held-chunk key, the lease keys of its vectors; ARGV: worker name, the record
# as read, heartbeat cutoff, the lease-value prefix of the lost worker, the record marked as taken over.
# Returns the leases freed, or -1 when the worker beat since (alive after all) or another live worker
# took the record (or finished with it).
_TAKE_OVER = (
    """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end
local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
if beat and tonumber(beat) >= tonumber(ARGV[3]) then return -1 end
"""
    + _freeing(3, "ARGV[4]")
    + """
redis.call('SET', KEYS[2], ARGV[5])
return n
"""
)

# KEYS: the held-chunk key; ARGV: the record as marked. Deletes it only while it is unchanged.
_DONE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
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

# KEYS: lease keys; ARGV: the lease-value prefix of a worker. Deletes the leases it held.
_DROP_LEASES = _freeing(1, "ARGV[1]") + "return n"


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
    taker: str = ""  # the live worker queuing it again after the holder was lost
    taken_until: float = 0.0  # when that taker counts as lost too, and the next may take it over

    def pack(self) -> bytes:
        fields = [self.run_id, self.machine, self.ids, self.holder, self.heartbeat_every]
        return msgpack.packb([*fields, self.crashed, self.hops, self.tries, self.taker, self.taken_until])

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


def drop_leases(redis: Any, keys: Keys, run_id: str, ids: list[str], holder: str) -> int:
    """Delete the leases on `ids` whose value starts with `holder`; how many there were."""
    if not ids:
        return 0
    return redis.register_script(_DROP_LEASES)(keys=[keys.lease(run_id, vid) for vid in ids], args=[holder])


def reclaim(redis: Any, keys: Keys, app: Any, me: str, now: float | None = None) -> list[dict[str, Any]]:
    """Queue again the chunks of lost workers (see the module doc); what was queued, per worker. `now`:
    Redis's clock (registry.clock), which the heartbeats are written at, unless a test says."""
    now = clock(redis) if now is None else now
    stale = redis.zrangebyscore(keys.workers(), "-inf", now - LOST_MARGIN, withscores=True)
    stale = [(n.decode(), beat) for n, beat in stale if n.decode() != me]
    if not stale:
        return []
    raws = redis.mget([keys.held(name) for name, _ in stale])
    take_over = redis.register_script(_TAKE_OVER)
    found = []
    for (name, beat), raw in zip(stale, raws, strict=True):
        if raw is None:
            continue
        held = Held.unpack(raw)
        cutoff = now - lost_after(held.heartbeat_every)
        if beat >= cutoff or held.taken_until > now:  # alive, or another live worker is queuing it
            continue
        mark = replace(held, taker=me, taken_until=now + lost_after(held.heartbeat_every)).pack()
        leases = [keys.lease(held.run_id, vid) for vid in held.ids]
        freed = take_over(keys=[keys.workers(), keys.held(name), *leases], args=[name, raw, cutoff, held.holder, mark])
        if freed < 0:
            continue  # alive after all, or another live worker took it
        finals = redis.hmget(keys.final(held.run_id), held.ids) if held.ids else []
        open_ids = [vid for vid, done in zip(held.ids, finals, strict=True) if done is None]
        if open_ids:
            extra = {"crashed": held.crashed, "hops": held.hops, "tries": held.tries}
            send_chunk(app, held.run_id, held.machine, open_ids, avoid=[name], **extra)
        redis.eval(_DONE, 1, keys.held(name), mark)  # queued: the record is done with
        done = {"worker": name, "run": held.run_id, "queued": len(open_ids), "leases_freed": freed}
        found.append({**done, "retaken_from": held.taker} if held.taker else done)
    return found
