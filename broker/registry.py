"""The worker registry: one live worker per name, and the liveness rules every module asks here.

Two questions, two windows:
* Is a worker lost (`lost_after`: three of its heartbeat intervals and a margin)? Then a live worker
  queues its chunk again (broker/reclaim.py), and it is no one to hand work to (`another_good_worker`).
  Short: a dead worker's vectors should move on within seconds.
* Does a worker still hold its name, and show live in `sweepctl workers` and `status` (`is_live`,
  LIVE_WITHIN)? Longer (30 s against 20 s at the default 5 s interval): the name of a lost worker
  stays refused until the live workers had time to queue its chunk again (a new worker of that name
  would overwrite the record of it), and a worker suspended for a while keeps its name.

A worker's row (`{p}:worker:W`, and its score in `{p}:workers`) is its identity while its
heartbeat is fresh. A name is taken in one atomic step (a Lua script): refused while a live
worker holds it (heartbeat within LIVE_WITHIN and not STOPPED), so two workers started with one
name at once cannot both get it. A row whose heartbeat lapsed shows LOST with its last heartbeat;
its name is free again, and the next registration anywhere forgets rows lapsed for FORGET_AFTER.
Every heartbeat score and every cutoff compared with one is Redis's clock (`clock`, and TIME inside
the scripts), never a host's own: a worker on a host whose clock is off is neither taken for lost
nor kept live by it.
A worker beats and marks STOPPED only its own row (compare-and-set on the instance id it registered
with), so a worker that lost its name while suspended can never write into, or stop, the one that
took it over: its next heartbeat finds the name gone and it exits.
"""

from __future__ import annotations

import uuid
from typing import Any

from broker.keys import Keys
from tracer.errors import InputError

LIVE_WITHIN = 30.0  # seconds: six missed heartbeats (workers beat every 5 s) and a worker is LOST
LOST_MARGIN = 5.0  # s on top of three missed heartbeats: scheduling noise on a busy host
FORGET_AFTER = 24 * 3600.0  # seconds a LOST row stays listed

# Lua: `now`, Redis's clock in seconds (a string, microseconds exact), for heartbeats written by a script.
_NOW = """
local t = redis.call('TIME')
local now = string.format('%d.%06d', t[1], t[2])
"""

# KEYS: worker hash, workers zset. ARGV: live within, forget after, name, worker key prefix, then the
# row's field/value pairs. Returns {now} when registered, else the holder's host, pid, heartbeat and now.
_REGISTER = (
    _NOW
    + """
local row, all = KEYS[1], KEYS[2]
local beat = tonumber(redis.call('HGET', row, 'heartbeat') or '0') or 0
if redis.call('HGET', row, 'health') ~= 'STOPPED' and tonumber(now) - beat < tonumber(ARGV[1]) then
  local holder = redis.call('HMGET', row, 'host', 'pid', 'heartbeat')
  table.insert(holder, now)
  return holder
end
local forget = tonumber(now) - tonumber(ARGV[2])
for _, old in ipairs(redis.call('ZRANGEBYSCORE', all, '-inf', forget)) do
  redis.call('DEL', ARGV[4] .. old)
end
redis.call('ZREMRANGEBYSCORE', all, '-inf', forget)
redis.call('DEL', row)
redis.call('HSET', row, 'heartbeat', now, unpack(ARGV, 5))
redis.call('ZADD', all, now, ARGV[3])
return {now}
"""
)

# KEYS: worker hash. ARGV: instance id. Marks the row STOPPED only while it is still this instance's.
_STOPPED = """
if redis.call('HGET', KEYS[1], 'instance') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'health', 'STOPPED', 'current', '')
return 1
"""


# KEYS: worker hash, workers zset. ARGV: instance id, name, then the row's field/value pairs.
# Writes the heartbeat only while the row is still this instance's: 0 when another worker took the
# name over, -1 when the row is gone (a Redis that restarted without it), 1 when written.
_BEAT = (
    _NOW
    + """
local holder = redis.call('HGET', KEYS[1], 'instance')
if not holder then return -1 end
if holder ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'heartbeat', now, unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], now, ARGV[2])
return 1
"""
)


class NameTaken(InputError):
    """A live worker already has this name."""


def clock(redis: Any) -> float:
    """Redis's clock, in seconds: the one every heartbeat and liveness cutoff is read against."""
    seconds, micros = redis.time()
    return seconds + micros / 1e6


def is_live(row: dict[str, str], now: float) -> bool:
    """Registered, not stopped, and its heartbeat within LIVE_WITHIN."""
    return row.get("health") != "STOPPED" and now - float(row.get("heartbeat") or 0) < LIVE_WITHIN


def lost_after(heartbeat_every: float) -> float:
    """Seconds without a heartbeat after which a worker beating every `heartbeat_every` s is lost."""
    return 3 * heartbeat_every + LOST_MARGIN


def another_good_worker(redis: Any, keys: Keys, machine: str, me: str, heartbeat_every: float) -> bool:
    """A GOOD worker of `machine` other than `me` that is not lost, so a chunk handed back to the queue
    runs on another device set (workers beat at one interval: `heartbeat_every`, the asker's)."""
    since = clock(redis) - lost_after(heartbeat_every)
    names = [n.decode() for n in redis.zrangebyscore(keys.workers(), since, "+inf")]
    others = [n for n in names if n != me]
    pipe = redis.pipeline(transaction=False)
    for name in others:
        pipe.hmget(keys.worker(name), ["machine", "health"])
    return any(row == [machine.encode(), b"GOOD"] for row in (pipe.execute() if others else []))


def register(redis: Any, keys: Keys, name: str, row: dict[str, Any]) -> str:
    """Take `name` for this worker with `row` as its liveness hash; returns the instance id that
    owns the row. Raises NameTaken while a live worker holds the name."""
    instance = uuid.uuid4().hex
    flat = [str(v) for pair in {**row, "instance": instance}.items() for v in pair]
    reply = redis.eval(
        _REGISTER, 2, keys.worker(name), keys.workers(), LIVE_WITHIN, FORGET_AFTER, name, keys.worker(""), *flat
    )  # fmt: skip
    if len(reply) > 1:
        host, pid, beat, now = (v.decode() if v else "?" for v in reply)
        age = float(now) - float(beat) if beat != "?" else 0.0
        raise NameTaken(
            f"worker name {name}",
            f"in use by a live worker (pid {pid} on {host}, heartbeat {age:.1f} s ago): pick another --name, "
            "or stop that worker first",
        )
    return instance


def beat(pipe: Any, keys: Keys, name: str, instance: str, fields: dict[str, Any]) -> None:
    """Queue this worker's heartbeat (at Redis's clock) on `pipe`; its reply is 1 when written, 0 when
    another worker holds the name now, -1 when Redis lost the row (register again)."""
    flat = [str(v) for pair in fields.items() for v in pair]
    pipe.eval(_BEAT, 2, keys.worker(name), keys.workers(), instance, name, *flat)


def mark_stopped(redis: Any, keys: Keys, name: str, instance: str) -> bool:
    """Show this worker STOPPED; False (nothing written) when another worker holds the name now."""
    return bool(redis.eval(_STOPPED, 1, keys.worker(name), instance))


def live_names(redis: Any, keys: Keys) -> set[str]:
    """Names held by live workers right now."""
    now = clock(redis)
    names = [n.decode() for n in redis.zrangebyscore(keys.workers(), now - LIVE_WITHIN, "+inf")]
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hmget(keys.worker(name), "health", "heartbeat")
    rows = pipe.execute() if names else []
    return {
        name
        for name, (health, beat) in zip(names, rows, strict=True)
        if is_live({"health": (health or b"").decode(), "heartbeat": (beat or b"0").decode()}, now)
    }
