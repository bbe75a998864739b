"""broker/reclaim.py alone, on a real redis-server: a lost worker's chunk taken over once, its leases
freed in the same step, its open vectors queued again. tests/test_faults*.py run it inside real workers."""

from __future__ import annotations

import base64
import json
import time

import msgpack
import pytest
import redis
from kombu.exceptions import OperationalError

from broker import registry
from broker.app import make_app
from broker.embedded import free_port
from broker.keys import Keys
from broker.reclaim import Held, hold, lost_after, reclaim

NO_EXTRA = {"avoid": [], "crashed": [], "hops": 0, "tries": 0}  # a chunk message's extras, as first queued


def queued(client: redis.Redis, keys: Keys) -> list[dict]:
    """The kwargs of the chunk messages on the n300 queue."""
    messages = [json.loads(m) for m in client.lrange(f"{keys.celery_prefix}sweeps.n300", 0, -1)]
    return [msgpack.unpackb(base64.b64decode(m["body"]))[1] for m in messages]


def test_a_lost_workers_chunk_is_taken_over_once_with_its_leases_and_a_live_ones_is_left(redis_server):
    client, keys = redis.Redis.from_url(redis_server), Keys("reclaim")
    app, now = make_app(redis_server, keys), time.time()
    every = 5.0
    client.set(keys.held("lost"), Held("r", "n300", ["v1", "v2", "v3"], "lost#1.a/", every).pack())
    client.set(keys.held("alive"), Held("r", "n300", ["v4"], "alive#2.b/", every).pack())
    client.zadd(keys.workers(), {"lost": now - lost_after(every) - 1, "alive": now - lost_after(every) + 1})
    client.set(keys.lease("r", "v1"), "lost#1.a/x", ex=30)
    client.set(keys.lease("r", "v2"), "other#3.c/y", ex=30)  # another worker claimed it since: kept
    client.set(keys.lease("r", "v4"), "alive#2.b/z", ex=30)
    client.hset(keys.final("r"), "v3", "PASS|||")
    found = reclaim(client, keys, app, "me", now)
    assert found == [{"worker": "lost", "run": "r", "queued": 2, "leases_freed": 1}]
    assert [client.exists(keys.lease("r", v)) for v in ("v1", "v2", "v4")] == [0, 1, 1]
    assert not client.exists(keys.held("lost")) and client.exists(keys.held("alive"))
    assert [(m["ids"], m["avoid"]) for m in queued(client, keys)] == [(["v1", "v2"], ["lost"])]
    assert reclaim(client, keys, app, "another", now) == []  # taken over once: nothing queued twice
    assert len(queued(client, keys)) == 1


def test_a_reclaimer_that_fails_to_publish_leaves_the_chunk_to_the_next_one(redis_server):
    """The reclaimer's broker is unreachable after it took the record over (as if it died between the two
    steps): the record stays, marked as its, and another live worker queues the chunk once the mark lapses."""
    client, keys = redis.Redis.from_url(redis_server), Keys("reclaim")
    now, every = time.time(), 5.0
    client.set(keys.held("lost"), Held("r", "n300", ["v1", "v2"], "lost#1.a/", every).pack())
    client.zadd(keys.workers(), {"lost": now - lost_after(every) - 1})
    client.set(keys.lease("r", "v1"), "lost#1.a/x", ex=30)
    cut_off = make_app(f"redis://127.0.0.1:{free_port()}/0", keys)  # no broker there: send_chunk raises
    with pytest.raises(OperationalError):
        reclaim(client, keys, cut_off, "first", now)
    assert not client.exists(keys.lease("r", "v1"))  # freed in the take-over step
    assert client.hlen(keys.reclaiming()) == 1 and queued(client, keys) == []
    app = make_app(redis_server, keys)
    assert reclaim(client, keys, app, "second", now) == []  # the first is still within its mark
    later = now + lost_after(every) + 1
    found = reclaim(client, keys, app, "second", later)
    assert found == [{"worker": "lost", "run": "r", "queued": 2, "retaken_from": "first"}]
    assert [(m["ids"], m["avoid"]) for m in queued(client, keys)] == [(["v1", "v2"], ["lost"])]
    assert not client.exists(keys.held("lost")) and not client.exists(keys.reclaiming())  # done once published
    assert reclaim(client, keys, app, "third", later + 60) == []


def test_an_old_instance_that_lost_its_name_never_writes_or_erases_the_new_ones_held_record(redis_server):
    """Stopped past LIVE_WITHIN, its chunk taken over and its name taken by a new instance, the old
    worker resumes: until it exits, its beat, its end of a chunk and its next chunk leave the name's
    record alone (in-process daemons, the real ones; neither has an executor open)."""
    from workers.daemon import RedisGone, WorkerDaemon

    client, keys = redis.Redis.from_url(redis_server), Keys("reclaim")
    old = WorkerDaemon(client, keys, "n300", [], "emulated", "w")
    old.register()
    old._hold("r1", "n300", ["v1"], NO_EXTRA)
    client.hset(keys.worker("w"), "heartbeat", time.time() - registry.LIVE_WITHIN - 1)  # stopped that long
    client.delete(keys.held("w"))  # a live worker queued its chunk again
    new = WorkerDaemon(client, keys, "n300", [], "emulated", "w")
    new.register()
    old.gave_up = "already exiting"  # in-process: the exit its beat starts would end the test run
    old.beat()  # the new instance is idle: the old one's record is not put back under the name
    assert not client.exists(keys.held("w"))
    new._hold("r2", "n300", ["v2"], NO_EXTRA)
    old._unhold()  # the old one's chunk ends
    assert client.get(keys.held("w")) == new.held
    with pytest.raises(RedisGone):
        old._hold("r3", "n300", ["v3"], NO_EXTRA)  # the old one took a message before its beat: it gives up on it
    assert client.get(keys.held("w")) == new.held
    new._unhold()
    assert not client.exists(keys.held("w"))


def test_a_reclaimed_chunk_keeps_its_crashed_vectors_hops_and_tries(redis_server):
    """A poison vector that crashed an executor once is retried once: its worker being lost since must
    not give it another crash attempt (the daemon records the chunk's extras; the reclaimer queues them)."""
    from workers.daemon import HEARTBEAT_EVERY, WorkerDaemon

    client, keys = redis.Redis.from_url(redis_server), Keys("reclaim")
    lost = WorkerDaemon(client, keys, "n300", [], "emulated", "lost")
    lost.register()
    lost._hold("r", "n300", ["v1", "v2"], {"avoid": ["other"], "crashed": ["v2"], "hops": 1, "tries": 2})
    now = time.time() + lost_after(HEARTBEAT_EVERY) + 1  # its heartbeat lapsed
    found = reclaim(client, keys, make_app(redis_server, keys), "me", now)
    assert [f["queued"] for f in found] == [2]
    [message] = queued(client, keys)
    assert (message["ids"], message["avoid"], message["crashed"], message["hops"], message["tries"]) == (
        ["v1", "v2"], ["lost"], ["v2"], 1, 2,
    )  # fmt: skip


def test_a_worker_whose_host_clock_is_behind_is_not_taken_for_lost(redis_server, monkeypatch):
    """Heartbeat scores and the reclaimer's cutoff come from Redis's clock: a worker on a host whose own
    clock is lost_after behind (here: this process's, while that worker beats) keeps its chunk."""
    from workers.daemon import HEARTBEAT_EVERY, WorkerDaemon

    client, keys = redis.Redis.from_url(redis_server), Keys("reclaim")
    behind = WorkerDaemon(client, keys, "n300", [], "emulated", "behind")
    behind.register()
    behind._hold("r", "n300", ["v1"], NO_EXTRA)
    true_time = time.time
    with monkeypatch.context() as host:
        host.setattr(time, "time", lambda: true_time() - lost_after(HEARTBEAT_EVERY) - 5)
        behind.beat()
    assert reclaim(client, keys, make_app(redis_server, keys), "me") == []
    assert client.get(keys.held("behind")) == behind.held
    assert registry.live_names(client, keys) == {"behind"}


def test_a_chunk_whose_taker_failed_is_queued_even_after_a_new_worker_took_the_lost_name(redis_server):
    """The take-over in progress is not kept under the lost worker's name: a new worker of that name
    (free after LIVE_WITHIN) neither hides it from the next taker nor overwrites it."""
    client, keys = redis.Redis.from_url(redis_server), Keys("reclaim")
    row = {"machine": "n300", "health": "GOOD", "host": "h", "pid": 1}
    registry.register(client, keys, "lost", row)
    every = 5.0
    then = registry.clock(client) - lost_after(every) - 1  # the first taker came lost_after ago: its mark lapsed
    client.zadd(keys.workers(), {"lost": then - registry.LIVE_WITHIN - 1})
    client.hset(keys.worker("lost"), "heartbeat", then - registry.LIVE_WITHIN - 1)
    client.set(keys.held("lost"), Held("r", "n300", ["v1"], "lost#1.a/", every).pack())
    with pytest.raises(OperationalError):
        reclaim(client, keys, make_app(f"redis://127.0.0.1:{free_port()}/0", keys), "first", then)
    instance = registry.register(client, keys, "lost", {**row, "pid": 2})  # the name is free again
    new = Held("r2", "n300", ["v9"], "lost#2.b/", every).pack()
    assert hold(client, keys, "lost", instance, new) == 1  # the new worker starts a chunk of its own
    found = reclaim(client, keys, make_app(redis_server, keys), "second")
    assert found == [{"worker": "lost", "run": "r", "queued": 1, "retaken_from": "first"}]
    assert [(m["ids"], m["avoid"]) for m in queued(client, keys)] == [(["v1"], ["lost"])]
    assert client.get(keys.held("lost")) == new and not client.exists(keys.reclaiming())
