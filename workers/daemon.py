"""The worker daemon: one Celery process (solo pool, concurrency 1) on its machine's queue,
pinned to a device set, with one executor process that owns the devices.

A chunk message names vector ids (in the order enqueue queued them: grouped by the mesh they open).
The worker first records that it holds the chunk (so a live worker can queue it again if this one
dies: broker/reclaim.py), then claims its vectors a few at a time, right before they run: one
atomic step per claim that refuses a vector that is final, held by another worker, or of a canceled
run, and otherwise starts its next attempt under a lease (broker/results.py). So no copy of a
chunk, redelivered or re-published, starts a vector twice.
A claimed vector is sent to the executor only under a lease confirmed lately: a worker stopped or
paused past its leases confirms them again first, and drops those another worker took over
(workers/policies/lease.py).
Each vector goes to the executor with its timeout; its record (written once, with the run's
aggregates in the same step) is queued to the record writer thread, so the device never waits on
Redis; the chunk is acked only after everything is written. The executor is kept one vector
ahead, and claims are made while it runs (for fast ops a batch ahead, by a claimer thread), so the
device does not idle on bookkeeping.

A heartbeat thread renews the worker's liveness and its leases, kills a vector whose run was
canceled, and queues again the chunks of workers whose heartbeat lapsed. Every wait on Redis is
bounded: a worker that cannot reach Redis for REDIS_GONE_LIMIT seconds says so and exits (its chunk
is queued again by a live worker), and SIGTERM stops it whatever Redis does. The Celery process
never imports ttnn.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.exceptions as redis_errors
import structlog

from broker import registry
from broker.app import RUN_CHUNK, TRACE_MODEL, make_app
from broker.keys import Keys
from broker.reclaim import Held, hold, reclaim, send_chunk, unhold
from broker.results import CANCELED, DEAD, RUN, Claim, Results, make_record, vector_fields
from broker.traces import jobs as tracejobs
from sweeps import status
from sweeps.profiles import get_profile
from sweeps.vector import VectorError, decode
from workers import recovery, tracejob
from workers.executor import NOT_STARTED, Executor, ExecutorDied
from workers.policies import cancel, crash, expiry, lost, shutdown
from workers.policies.cancel import Cancel
from workers.policies.lease import Leases, Stamp
from workers.policies.quarantine import Health, Quarantined
from workers.policies.shutdown import GivenBack, WarmShutdown
from workers.writer import RecordWriter

LEASE_TTL = int(os.environ.get("SWEEPCTL_LEASE_TTL", "30"))
HEARTBEAT_EVERY = float(os.environ.get("SWEEPCTL_HEARTBEAT", "5"))
REDIS_GONE_LIMIT = float(os.environ.get("SWEEPCTL_REDIS_GONE_LIMIT", "90"))  # s without Redis: the worker exits
EXIT_GRACE = 30.0  # s Celery gets to shut down after the worker gave up (or was stopped) before a hard exit
FLUSH_LIMIT = REDIS_GONE_LIMIT + 60.0  # s a chunk waits for its records at most
MAX_CHUNK_TRIES = 3  # a chunk that raised this many times: its open vectors end INFRA
CLAIM_AHEAD_S = 0.05  # claim about this much work at once (one vector for slow ops, up to MAX_CLAIM)
MAX_CLAIM = 32
EXIT_GAVE_UP = 3  # exit status of a worker that gave up on Redis (systemd restarts it)
RECHECK_WINDOW = 10.0  # s of this worker's records written again when Redis restarted (everysec loses ~1 s)

T = TypeVar("T")


class RedisGone(Exception):
    """Redis did not answer within the bound (or the worker is stopping while it is away)."""


log = structlog.get_logger("sweepctl.worker")


class Heartbeat(threading.Thread):
    """Renews the worker's liveness and leases every few seconds, queues lost workers' chunks
    again, and makes the worker give up when Redis has been away too long."""

    def __init__(self, daemon: WorkerDaemon) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.owner = daemon
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_EVERY):
            try:
                self.owner.beat()
            except Exception as exc:  # Redis away: the leases lapse, which is the point of leases
                log.warning("heartbeat_failed", error=str(exc))
            away = time.monotonic() - self.owner.last_ok
            if away > REDIS_GONE_LIMIT:
                self.owner.give_up(f"Redis did not answer for {away:.0f} s (limit {REDIS_GONE_LIMIT:g} s)")


class WorkerDaemon:
    def __init__(self, redis: Any, keys: Keys, machine: str, devices: list[int], backend: str, name: str) -> None:
        self.redis = redis
        self.keys = keys
        self.machine = machine
        self.devices = devices
        self.backend = backend
        self.name = name
        self.host = socket.gethostname()
        self.token = f"{name}#{os.getpid()}.{uuid.uuid4().hex[:6]}"  # this process: its lease values start so
        self.results = Results(redis, keys, worker=self.token)
        self.writer = RecordWriter(self.results, REDIS_GONE_LIMIT, self.give_up)  # its own pooled connection
        self.executor = Executor(machine, backend, devices, log=_executor_log())
        self.current: list[tuple[str, str]] = []  # (run, vector) in the executor: running, and next
        # of vectors claimed, not booked; they bound when the executor may start one (its stage cell)
        self.leases = Leases(LEASE_TTL, registry.lost_after(HEARTBEAT_EVERY), self.executor.cell.set_start_by)
        self.cancel = Cancel()  # shared with the heartbeat thread, which kills a canceled run's vector
        self.shutdown = WarmShutdown()
        self.gave_up: str | None = None
        self.last_ok = time.monotonic()  # when Redis last answered
        self.beat_ok = self.last_ok  # when a heartbeat last reached Redis
        self.health = Health(redis, keys, name)
        self.opened = False  # the executor opened once: when it is found dead later, reset first
        self.profile = get_profile(machine)
        self.consumer: Any = None  # Celery's consumer, to stop and resume consuming
        self.app: Any = None  # the Celery app, to queue chunks again
        self.held: bytes | None = None  # the chunk being run, as recorded in keys.held
        self.vector_s: float | None = None  # running mean of a vector's time on the device
        self.claimer = ThreadPoolExecutor(1, thread_name_prefix="claimer")  # claims ahead for fast ops
        self.ahead: Future[list[Claim]] | None = None  # a claim of the chunk's next vectors, in flight
        self.redis_run_id: str | None = None  # the Redis server process last seen: a new one restarted
        self.heartbeat = Heartbeat(self)
        self.instance = ""  # the registry's id of this worker's row, once registered

    # --- liveness ---------------------------------------------------------------------------

    def register(self) -> None:
        """Take this worker's name (refused while a live worker holds it: broker/registry.py)."""
        self.take_name()
        # the Redis server seen from the start: one restarted before the first beat is noticed too
        self.redis_run_id = self.writer.server = self.redis.info("server")["run_id"]

    def take_name(self) -> None:
        """Write this worker's row under its name, as a new instance."""
        row = {
            "machine": self.machine,
            "devices": ",".join(map(str, self.devices)),
            "backend": self.backend,
            "host": self.host,
            "pid": os.getpid(),
            "health": "UNKNOWN",
            "current": "",
            "started": time.time(),
        }
        sent = Stamp.now()
        self.instance = registry.register(self.redis, self.keys, self.name, row)
        self.leases.beaten(sent)

    def beat(self) -> None:
        sent = Stamp.now()
        current, held = list(self.current), self.held
        pipe = self.redis.pipeline(transaction=False)
        registry.beat(pipe, self.keys, self.name, self.instance, {"current": current[0][1] if current else ""})
        if held is not None:  # put back if a live worker took it while this one was stopped (SIGSTOP)
            hold(pipe, self.keys, self.name, self.instance, held, put_back=True)  # if the name is still its
        runs = sorted({run_id for run_id, _ in current})
        for run_id in runs:
            pipe.hget(self.keys.run(run_id), "state")
        pipe.hget(self.keys.worker(self.name), "release")
        pipe.info("server")
        ours, *replies, server = pipe.execute()
        if ours == 0:  # suspended past LIVE_WITHIN, and another worker took the name meanwhile
            self._name_taken()
            return
        if ours == -1:  # a Redis that restarted without this worker's row: take the name again
            self.take_name()
            self.health.set(self.health.state)
        else:
            self.leases.beaten(sent)
        previous, self.last_ok = self.beat_ok, time.monotonic()
        self.beat_ok = self.last_ok
        if self.redis_run_id not in (None, server["run_id"]):  # the writes lost are from before the last beat
            self.check_written(previous - RECHECK_WINDOW)
        self.redis_run_id = server["run_id"]
        self.writer.forget_before(self.beat_ok - RECHECK_WINDOW)  # only when Redis answers: kept over an outage
        leases, sent = self.leases.held(), Stamp.now()
        taken = self.results.renew(leases, LEASE_TTL)
        self.leases.renewed(leases, taken, sent)  # a claimed vector whose lease was taken over is not sent
        if taken:  # this worker was stopped past its leases: the vectors went on elsewhere
            log.warning("leases_taken_over", worker=self.name, count=len(taken))
        states = dict(zip(runs, replies[-1 - len(runs) : -1], strict=True))
        if current and states.get(current[0][0]) == b"canceled" and self.cancel.kill(current[0]):
            self.executor.kill_group()  # the chunk's thread books the killed vector CANCELED
        if replies[-1] and self.health.state == recovery.BAD and self.consumer is not None:
            self.redis.hdel(self.keys.worker(self.name), "release")
            self.consumer.controller.hub.call_soon(self.release)
        if self.app is not None:
            for found in reclaim(self.redis, self.keys, self.app, self.name):
                log.warning("lost_worker_chunk_queued", by=self.name, **found)
            for uid in tracejobs.requeue_lost(self.redis, self.keys, self.app):
                log.warning("lost_trace_job_queued", by=self.name, uid=uid)

    def _name_taken(self) -> None:
        """This worker was suspended past LIVE_WITHIN and another worker took its name: it exits."""
        self.give_up(f"another worker took the name {self.name} while this one was stopped")

    def check_written(self, since: float) -> None:
        """Redis restarted. With `appendfsync everysec` its AOF may miss the writes of its last second
        (a power loss): the records and bookings this worker wrote lately are written again (those
        still there are left alone; none if the writer did it already), so the vectors they settled
        stay settled and none runs again."""
        self.writer.resend(self.redis.info("server")["run_id"], since)

    def give_up(self, reason: str) -> None:
        """Exit: Redis is gone (or the writer could not reach it). Celery shuts down warm; if it has
        not within EXIT_GRACE, the process ends hard. A live worker queues the chunk again."""
        if self.gave_up is not None:
            return
        self.gave_up = reason
        log.error("worker_exits", worker=self.name, reason=reason)
        self.begin_stop()
        os.kill(os.getpid(), signal.SIGTERM)
        _exit_later(self.executor, EXIT_GRACE)

    def begin_stop(self) -> None:
        """A warm shutdown began (SIGTERM, `sweepctl down`, or giving up): workers/policies/shutdown.py."""
        self.shutdown.begin()

    def recover(self, cause: str) -> None:
        """After the executor died or timed out: reset, respawn, health check; quarantine when that fails
        (workers/policies/quarantine.py)."""
        self.health.set(recovery.UNKNOWN, cause)
        self.health.settle(self._reset())

    def _reset(self) -> recovery.RecoveryResult:
        """Reset the devices, respawn the executor, health-check it; the result is logged."""
        result = recovery.recover(self.executor, self.profile, self.backend)
        log.info("recovery", worker=self.name, health=result.health, why=result.message)
        return result

    def quarantine(self) -> None:
        """Stop taking chunks of this machine's queue; the worker stays up and shows BAD."""
        if self.consumer is not None:
            self.consumer.cancel_task_queue(self.profile.queue)

    def release(self) -> None:
        """A person fixed the devices (`sweepctl workers --release`): check them, then consume again."""
        try:
            self.recover("released by an operator")
        except Quarantined:
            return
        if self.consumer is not None:
            self.consumer.add_task_queue(self.profile.queue)

    def start(self) -> None:
        self.register()
        self.writer.start()
        self.heartbeat.start()
        self.open_executor()

    def open_executor(self) -> str | None:
        """Spawn the executor; None when it opened, else why not (the device set is BAD). When the
        first open fails, or the executor died since (with nothing in flight), the devices are reset
        and health-checked before it opens again, as after a hang (recovery.recover): a wedged board
        fails every open without a reset, each only after the executor's READY_TIMEOUT."""
        if not self.opened:
            try:
                self.executor.start()
            except ExecutorDied as exc:
                log.error("executor_open_failed", error=exc.description)
            else:
                self.opened = True
                self.health.set(recovery.GOOD)
                return None
        result = self._reset()
        self.health.set(result.health, result.message)
        self.opened = self.opened or result.health == recovery.GOOD
        return None if result.health == recovery.GOOD else result.message

    def stop(self) -> None:
        """Celery shut down: write what is queued (briefly, if Redis is away), stop the executor."""
        # whatever happens below, the process ends; after the executor had its time to close the mesh
        # (a Galaxy's 32 chips take longer than EXIT_GRACE: profiles.close_timeout)
        _exit_later(self.executor, max(EXIT_GRACE, self.profile.close_timeout + shutdown.STOP_FLUSH + 10.0))
        failing = self.writer.failing_for() > 0
        wait = max(1.0, self.shutdown.deadline - time.monotonic()) if failing else shutdown.STOP_FLUSH
        if not self.writer.flush(timeout=wait):
            log.error("records_not_written_at_shutdown", worker=self.name)
        self.writer.stop()
        self.heartbeat.stopped.set()
        self.executor.stop()
        try:
            registry.mark_stopped(self.redis, self.keys, self.name, self.instance)
        except redis_errors.RedisError as exc:
            log.warning("stopped_not_recorded", error=str(exc))

    # --- chunks -----------------------------------------------------------------------------

    def take_chunk(
        self, run_id: str, machine: str, ids: list[str], avoid: Iterable[str] = (), crashed: Iterable[str] = (),
        hops: int = 0, tries: int = 0,
    ) -> None:  # fmt: skip
        """Celery's task body. Quarantined, GivenBack and RedisGone escape (the message goes back);
        any other failure queues the chunk again, MAX_CHUNK_TRIES times at most. A chunk queued again
        after an infra fault names the worker it should `avoid` (the one whose device set failed or
        died): that worker hands it back, crash.MAX_HANDBACKS times at most, while another live worker of
        the machine is GOOD, so the retry runs on another device set when one exists."""
        extra = {"avoid": list(avoid), "crashed": list(crashed), "hops": hops, "tries": tries}
        try:
            if crash.hands_back(self.name, extra["avoid"], hops, self._another_worker):
                send_chunk(self.app, run_id, machine, ids, **{**extra, "hops": hops + 1})
                log.info("chunk_handed_back", worker=self.name, run=run_id, vectors=len(ids))
                return
            self._hold(run_id, machine, ids, extra)
            self.run_chunk(run_id, ids, frozenset(extra["crashed"]))
        except (Quarantined, GivenBack) as exc:
            if isinstance(exc, Quarantined):
                self.quarantine()
            self._unhold()  # the message itself goes back to the queue
            raise
        except RedisGone as exc:
            if not self.shutdown.stopping:
                self.give_up(str(exc))
            raise  # the chunk stays recorded as held: a live worker queues it again
        except Exception as exc:
            log.exception("chunk_failed", worker=self.name, run=run_id, tries=tries + 1, error=str(exc))
            self._chunk_failed(run_id, machine, ids, extra, exc)
        self._unhold()

    def _chunk_failed(self, run_id: str, machine: str, ids: list[str], extra: dict[str, Any], exc: Exception) -> None:
        if extra["tries"] + 1 < MAX_CHUNK_TRIES:
            send_chunk(self.app, run_id, machine, ids, **{**extra, "tries": extra["tries"] + 1})
            return
        message = f"the chunk failed {MAX_CHUNK_TRIES} times, last on {self.name}: {type(exc).__name__}: {exc}"
        self._book_unrun(run_id, self._payloads(run_id, ids), status.INFRA, message)
        self._flush()

    def run_chunk(self, run_id: str, ids: list[str], crashed: frozenset[str] = frozenset()) -> dict[str, int]:
        """Run a chunk's vectors in order; returns once every record is in Redis (then Celery acks).

        The executor is kept one vector ahead: the next vector waits in its pipe while the daemon
        books the previous one and claims the ones after. A vector's timeout counts from when it
        reaches the head (the executor starts it the moment the one before ends), on the monotonic
        clock. The executor starts it only by the time its lease stays fresh (workers/stage.py's
        start_by, from workers/policies/lease.py): one read later comes back NOT_STARTED, unbooked,
        and is confirmed again like any claimed vector before it is sent again. When the executor
        dies or times out, its stage cell says whose fault that was (Executor.receive,
        workers/stage.py: CRASH / HANG only inside the op call, ERROR in sweepctl's host work, INFRA
        on device I/O or before the vector started); whatever it was, the devices are reset and
        health-checked before the next vector, and the vector behind never started and is sent
        again, same attempt. A vector that took the executor down as CRASH or INFRA runs once more,
        on another worker of the machine when one is live (a poison vector crashes twice and ends
        CRASH; workers/policies/crash.py); `crashed` names vectors that did so once already. When
        recovery fails the chunk goes back to the queue (Quarantined)."""
        counts = {"ran": 0, "skipped": 0}
        self.cancel.start_chunk()
        self.ahead = None
        if expiry.due(self._redis(lambda: self.redis.hget(self.keys.run(run_id), "expires")), time.time()):
            self._book_unrun(run_id, self._payloads(run_id, ids), status.EXPIRED, expiry.MESSAGE)
            self._flush()
            return counts
        pending: deque[str] = deque(ids)
        claimed: deque[_Item] = deque()  # leased, not yet in the executor
        inflight: deque[_Item] = deque()
        try:
            while True:
                while len(inflight) < self.shutdown.ahead():
                    if not claimed:
                        if self.ahead is None:
                            if not pending or self.cancel.stops(run_id):
                                break
                            self._claim_ahead(run_id, pending)
                        claimed.extend(self._collect(run_id, crashed, counts))
                        continue
                    if self.leases.stale(self.keys.lease(run_id, claimed[0].vector["id"])):  # stopped or paused?
                        self._confirm(run_id, claimed, crashed, counts)
                        if not claimed:
                            continue
                    item = claimed[0]
                    if not (self.executor.alive if inflight else self.executor.polled_alive()):  # died idle?
                        error = self.open_executor()
                        if error is not None:  # the device set failed: this attempt is INFRA, retried elsewhere
                            claimed.popleft()
                            self._book(run_id, item, {"status": status.INFRA, "message": error}, final=False)
                            raise Quarantined(f"the executor could not open: {error}")
                    self._in_executor(run_id, [*inflight, item])  # its start-by time, before it is there
                    if not self.executor.send(item.payload):
                        self.executor.kill()
                        self._in_executor(run_id, inflight)
                        break
                    claimed.popleft()
                    item.started = Stamp.now() if not inflight else None
                    inflight.append(item)
                if self.ahead is None and pending and not self.shutdown.stopping and not self.cancel.stops(run_id):
                    batch = self._batch()
                    if batch > 2 and len(claimed) <= batch:  # fast vectors: claim the next ones meanwhile
                        self._claim_ahead(run_id, pending)
                if self.cancel.stops(run_id) and inflight and self.cancel.kill(self.current[0]):
                    self.executor.kill_group()  # a claim saw the cancel: kill what runs now
                if not inflight:
                    if self.cancel.stops(run_id):
                        self._cancel_rest(run_id, inflight, claimed, pending)
                        break
                    if claimed or pending or self.ahead is not None:
                        self.shutdown.hand_back(self.name)  # what is in the executor has finished
                        continue
                    break
                head = inflight.popleft()
                head.started = head.started or Stamp.now()
                limit = float(head.vector["timeout"])  # counted on the monotonic clock: a wall-clock step fakes no HANG
                outcome = self.executor.receive(limit - (time.monotonic() - head.started.mono), limit)
                now = Stamp.now()
                self._in_executor(run_id, inflight)
                if outcome.get(NOT_STARTED):  # read past its start-by time: back to be confirmed, unbooked
                    log.warning("vector_not_started", worker=self.name, run=run_id, vector=head.vector["id"])
                    head.started = None
                    claimed.appendleft(head)
                    if inflight:
                        inflight[0].started = now
                    continue
                self._time(now.mono - head.started.mono)
                outcome = self.cancel.outcome(run_id, head.vector["id"], outcome)
                retry = crash.retries(outcome, head.crashed)
                self._book(run_id, head, outcome, now.wall, final=not retry)
                counts["ran"] += 1
                if retry:
                    self._retry_crashed(run_id, head, claimed, counts)
                if self.cancel.stops(run_id):
                    self._cancel_rest(run_id, inflight, claimed, pending)
                    self._in_executor(run_id, inflight)
                if not self.executor.alive:  # hang, crash or cancel: the executor is gone with its pipe
                    claimed.extendleft(reversed(inflight))
                    inflight.clear()
                    self._in_executor(run_id, inflight)
                    self.cancel.killed()
                    self.recover(f"{outcome['status']} on {head.vector['op']} vector {head.vector['id'][:12]}")
                elif inflight:
                    inflight[0].started = now
        except Exception as exc:
            self._abandon(run_id, exc, inflight, claimed)
            raise
        self._in_executor(run_id, [])
        self.cancel.killed()
        self._flush()
        log.debug("chunk_done", run=run_id, **counts)
        return counts

    def _in_executor(self, run_id: str, items: Iterable[_Item]) -> None:
        """The vectors in the executor (running, then queued): shown in this worker's row, and their
        leases bound the time until which the executor may start one (workers/policies/lease.py)."""
        self.current = [(run_id, i.vector["id"]) for i in items]
        self.leases.executing([self.keys.lease(run_id, vid) for _, vid in self.current])

    def _batch(self) -> int:
        """Vectors to claim in one step: about CLAIM_AHEAD_S of work (one for slow ops)."""
        return 2 if self.vector_s is None else max(1, min(MAX_CLAIM, int(CLAIM_AHEAD_S / max(self.vector_s, 1e-4))))

    def _claim_ahead(self, run_id: str, pending: deque[str]) -> None:
        """Start claiming the next vectors of the chunk in the claimer thread: for fast ops the claim's
        round trip overlaps with the vectors running, instead of holding the device up."""
        ids = [pending.popleft() for _ in range(min(self._batch(), len(pending)))]
        self.ahead = self.claimer.submit(self._request, run_id, ids)

    def _collect(self, run_id: str, crashed: Iterable[str], counts: dict) -> list[_Item]:
        """The vectors the claim started by _claim_ahead got (waiting for it if need be)."""
        future, self.ahead = self.ahead, None
        return self._take(run_id, future.result(), crashed, counts) if future is not None else []

    def _request(self, run_id: str, ids: list[str]) -> list[Claim]:
        """Claim `ids`; the leases taken are renewed by the heartbeat from here on."""
        value = f"{self.token}/{uuid.uuid4().hex[:12]}"  # a resend after a lost reply reuses it
        sent = Stamp.now()
        claims = self._redis(lambda: self.results.claim_as(value, run_id, ids, LEASE_TTL, lost.MAX_LOST_ATTEMPTS))
        for claim in claims:
            if claim.action == RUN:
                self.leases.take(self.keys.lease(run_id, claim.vector_id), claim.lease, sent)
        return claims

    def _confirm(self, run_id: str, claimed: deque[_Item], crashed: Iterable[str], counts: dict) -> None:
        """The lease of the next vector to send, or this worker's heartbeat, was confirmed too long ago
        (workers/policies/lease.py): beat, then renew every claimed vector's lease in one step; those
        lost are released and claimed again, so a vector another worker took over (or finished)
        meanwhile is dropped here without a record."""
        key = self.keys.lease
        sent, at = [(key(run_id, i.vector["id"]), i.lease) for i in claimed], Stamp.now()
        beat = self._redis(self._beat_only)
        if beat == 0:
            self._name_taken()
            raise RedisGone("this worker's name was taken over: its chunk is another worker's now")
        if beat == 1:  # before the renew: a worker taking this one over from now on leaves its leases alone
            self.leases.beaten(at)
        self.leases.renewed(sent, self._redis(lambda: self.results.renew(sent, LEASE_TTL)), at)
        lost_now = [self.leases.lost(key(run_id, i.vector["id"])) for i in claimed]
        if not any(lost_now):
            return
        lapsed = [i for i, lapses in zip(claimed, lost_now, strict=True) if lapses]
        kept = [i for i, lapses in zip(claimed, lost_now, strict=True) if not lapses]
        log.warning("claimed_leases_lost", worker=self.name, run=run_id, count=len(lapsed))
        for item in lapsed:
            self.leases.forget(key(run_id, item.vector["id"]))
            self.writer.attempt_released(run_id, item.vector["id"], item.attempt, item.lease)
        self._flush()  # the claim below must find the attempts given back
        ids = [i.vector["id"] for i in lapsed]
        again = self._claim(run_id, ids, {*crashed, *(i.vector["id"] for i in lapsed if i.crashed)}, counts)
        claimed.clear()
        claimed.extend([*again, *kept])

    def _beat_only(self) -> int:
        """This worker's heartbeat alone (registry.beat's reply: 1 written, 0 name taken, -1 row gone)."""
        pipe = self.redis.pipeline(transaction=False)
        registry.beat(pipe, self.keys, self.name, self.instance, {})
        return pipe.execute()[0]

    def _claim(self, run_id: str, ids: list[str], crashed: Iterable[str], counts: dict) -> list[_Item]:
        return self._take(run_id, self._request(run_id, ids), crashed, counts)

    def _take(self, run_id: str, claims: list[Claim], crashed: Iterable[str], counts: dict) -> list[_Item]:
        """Act on what a claim step decided: the vectors to run, the others booked or skipped."""
        items, canceled = [], []
        for claim in claims:
            if claim.action == RUN:
                item = self._item(run_id, claim, crashed)
                if item is not None:
                    items.append(item)
            elif claim.action == DEAD:  # its worker died in it twice: not run again
                attempt, outcome = lost.dead(claim)
                self._book(run_id, _Item(self._fields(claim), b"", attempt), outcome)
            elif claim.action == CANCELED:
                canceled.append((claim.vector_id, claim.payload))
            else:
                counts["skipped"] += 1
        if canceled:
            self.cancel.seen(run_id)
            counts["skipped"] += len(canceled)
            self._book_unrun(run_id, canceled, status.CANCELED, cancel.UNRUN)
        return items

    def _item(self, run_id: str, claim: Claim, crashed: Iterable[str]) -> _Item | None:
        """The claimed vector to run; an unreadable one is booked INFRA here (no executor sees it)."""
        died = lost.lost_attempt(claim)
        if died is not None:  # its last worker died in it: book that attempt INFRA; this one is its retry
            attempt, outcome = died
            self._book(run_id, _Item(self._fields(claim), b"", attempt), outcome, final=False)
        try:
            vector = decode(claim.payload or b"")
        except VectorError as exc:
            log.error("bad_vector", run=run_id, vector=claim.vector_id, error=str(exc))
            bad = _Item(self._fields(claim), b"", claim.attempt, lease=claim.lease)
            self._book(run_id, bad, {"status": status.INFRA, "message": f"worker {self.name}: {exc}"})
            return None
        return _Item(vector, claim.payload or b"", claim.attempt, lease=claim.lease,
                     crashed=claim.vector_id in crashed)  # fmt: skip

    def _fields(self, claim: Claim) -> dict[str, Any]:
        op, machine, config_hash = vector_fields(claim.payload, self.machine)
        return {"id": claim.vector_id, "op": op, "machine": machine, "config_hash": config_hash}

    def _retry_crashed(self, run_id: str, head: _Item, claimed: deque[_Item], counts: dict) -> None:
        """Once more, on another device set when a live worker of the machine has one, else here
        after the reset. The crash record is written first: the retry's claim must find it."""
        self._flush()
        vid = head.vector["id"]
        if self._another_worker():
            send_chunk(self.app, run_id, self.machine, [vid], avoid=[self.name], crashed=[vid])
            log.info("crash_retried_elsewhere", worker=self.name, run=run_id, vector=vid)
        else:
            claimed.extendleft(self._claim(run_id, [vid], [vid], counts))

    def _cancel_rest(self, run_id: str, inflight: deque[_Item], claimed: deque[_Item], pending: deque[str]) -> None:
        """The run was canceled: what this worker claimed is booked CANCELED here (cancel left it to
        its lease holder), and the unclaimed rest unless it is final or someone else holds it."""
        claimed.extend(self._collect(run_id, (), {"skipped": 0}))
        for item in [*inflight, *claimed]:
            self._book(run_id, item, {"status": status.CANCELED, "message": cancel.CLAIMED})
        inflight.clear()
        claimed.clear()
        if pending:
            self._book_unrun(run_id, self._payloads(run_id, list(pending)), status.CANCELED, cancel.UNRUN)
            pending.clear()

    def _abandon(self, run_id: str, exc: Exception, inflight: deque[_Item], claimed: deque[_Item]) -> None:
        """The chunk stops early: claims that never started are released for the next worker; vectors
        in the executor (they may have started) are killed and their attempt booked INFRA."""
        self._in_executor(run_id, [])
        self.cancel.killed()
        future, self.ahead = self.ahead, None
        if isinstance(exc, RedisGone):  # nothing can be written: the leases lapse, the held chunk is queued again
            return
        try:
            ahead = future.result() if future is not None else []
        except Exception:  # that claim failed too: it holds nothing
            ahead = []
        for claim in ahead:  # claimed in the claimer thread, never taken: free them like the others
            if claim.action == RUN:
                self.leases.forget(self.keys.lease(run_id, claim.vector_id))
                self.writer.attempt_released(run_id, claim.vector_id, claim.attempt, claim.lease)
        if inflight:
            self.executor.kill()
            why = f"the worker abandoned its chunk: {type(exc).__name__}: {exc}"
            for item in inflight:
                self._book(run_id, item, {"status": status.INFRA, "message": why}, final=False)
            inflight.clear()
        for item in claimed:
            self.leases.forget(self.keys.lease(run_id, item.vector["id"]))
            self.writer.attempt_released(run_id, item.vector["id"], item.attempt, item.lease)
        claimed.clear()
        try:
            self._flush()
        except RedisGone as gone:
            log.error("release_not_written", run=run_id, error=str(gone))

    def _book(
        self, run_id: str, item: _Item, outcome: dict[str, Any], end: float | None = None, final: bool = True
    ) -> None:
        vector = item.vector
        if outcome["status"] != status.PASS:
            log.info("vector_not_passed", run=run_id, vector=vector["id"], op=vector["op"], status=outcome["status"])
        record = make_record(
            vector,
            run_id,
            item.attempt,
            outcome,
            backend=self.backend,
            worker=self.name,
            host=self.host,
            devices=self.devices,
            ttnn_version=self.executor.ttnn_version,
            start=item.started.wall if item.started else None,
            end=end or time.time(),
        )
        if item.lease:
            self.leases.forget(self.keys.lease(run_id, vector["id"]))
        self.writer.attempt_finished(record, final, item.lease)

    def _payloads(self, run_id: str, ids: list[str]) -> list[tuple[str, bytes | None]]:
        """(id, stored vector) of each of `ids`, for booking them unrun."""
        return list(zip(ids, self._redis(lambda: self.redis.hmget(self.keys.vectors(run_id), ids)), strict=True))

    def _book_unrun(self, run_id: str, vectors: list[tuple[str, bytes | None]], state: str, message: str) -> None:
        """Vectors that never ran here, booked `state` unless final or held by another worker."""
        where = {"backend": self.backend, "worker": self.name, "host": self.host}
        ops = self.results.unrun_ops(run_id, vectors, {"status": state, "message": message}, self.machine, **where)
        self.writer.unrun(run_id, ops)

    def _time(self, seconds: float) -> None:
        self.vector_s = seconds if self.vector_s is None else 0.8 * self.vector_s + 0.2 * seconds

    # --- Redis, bounded ---------------------------------------------------------------------

    def _redis(self, call: Callable[[], T]) -> T:
        """A Redis call from the chunk's thread, retried while Redis restarts, REDIS_GONE_LIMIT s at
        most (less when stopping)."""
        delay, first = 0.2, time.monotonic()
        while True:
            try:
                result = call()
                self.last_ok = time.monotonic()
                return result
            except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
                now = time.monotonic()
                away = now - first
                if away > REDIS_GONE_LIMIT or now > self.shutdown.deadline or self.gave_up:
                    raise RedisGone(f"Redis did not answer for {away:.0f} s: {exc}") from None
                log.warning("redis_retry", error=str(exc))
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _flush(self) -> None:
        """Wait until the writer has written everything queued, within the Redis bound."""
        deadline = time.monotonic() + FLUSH_LIMIT
        while not self.writer.flush(timeout=1.0):
            failing = self.writer.failing_for()
            if self.writer.broken or self.gave_up or (failing and time.monotonic() > self.shutdown.deadline):
                raise RedisGone(f"records not written: Redis did not answer for {failing:.0f} s")
            if not self.writer.is_alive():  # it died of a bug: nothing queued will ever be written
                raise RuntimeError("the record writer thread stopped")
            if time.monotonic() > deadline:  # the writer gives up sooner; this bounds the wait whatever it does
                raise RedisGone(f"records not written within {FLUSH_LIMIT:g} s")

    def _hold(self, run_id: str, machine: str, ids: list[str], extra: dict[str, Any]) -> None:
        """Record the chunk (and its message's extras, kept if a live worker queues it again) as this worker's."""
        carried = (extra["crashed"], extra["hops"], extra["tries"])
        held = Held(run_id, machine, ids, f"{self.token}/", HEARTBEAT_EVERY, *carried).pack()
        if not self._redis(lambda: hold(self.redis, self.keys, self.name, self.instance, held)):
            self._name_taken()
            raise RedisGone("this worker's name was taken over: the chunk is left to its queue")
        self.held = held

    def _unhold(self) -> None:
        """Delete this worker's held record, only if it is this process's (not a new holder's of the name)."""
        self.held = None
        self._redis(lambda: unhold(self.redis, self.keys, self.name, f"{self.token}/"))

    def _another_worker(self) -> bool:
        """A live, healthy worker of this machine type other than this one (broker/registry.py)."""
        return registry.another_good_worker(self.redis, self.keys, self.machine, self.name, HEARTBEAT_EVERY)


@dataclass
class _Item:
    """A vector of the chunk being run: decoded, its wire bytes, its attempt, the lease it holds."""

    vector: dict[str, Any]
    payload: bytes
    attempt: int
    lease: str = ""
    started: Stamp | None = None  # when it reached the head of the executor: the record's start, its timeout's
    crashed: bool = False  # an earlier attempt killed an executor


def _exit_later(executor: Executor, after: float) -> None:
    """End the process after `after` s if it is still up, executor first: a stop is never stuck."""

    def exit_now() -> None:
        log.error("worker_exit_forced", after_s=after)
        executor.kill_group()
        os._exit(EXIT_GAVE_UP)

    timer = threading.Timer(after, exit_now)
    timer.daemon = True
    timer.start()


def _executor_log():
    path = os.environ.get("SWEEPCTL_EXECUTOR_LOG")
    return open(path, "ab") if path else None  # noqa: SIM115 - owned by the executor for its lifetime


def configure_logging() -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ]
    )


def run_worker(
    redis_url: str, keys: Keys, machine: str, devices: list[int], backend: str, name: str, events: bool = False
) -> int:
    """Run a Celery solo worker on the machine's queue until it is told to stop.

    It always answers Celery's broadcast commands (`celery -A broker.app inspect ping`). `events`
    turns on task events and Celery's worker heartbeats, which Flower needs to show the worker,
    its queue and its tasks; off by default: each is a Redis PUBLISH the hot path does not need."""
    import redis as redis_lib
    from celery import signals
    from celery.exceptions import Reject

    configure_logging()
    profile = get_profile(machine)
    app = make_app(redis_url, keys)
    client = redis_lib.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=30)  # a hung Redis too
    daemon = WorkerDaemon(client, keys, profile.name, devices, backend, name)
    daemon.app = app

    @app.task(name=RUN_CHUNK, bind=True, acks_late=True)
    def run_chunk(task, run_id: str, machine: str, ids: list[str], **extra: Any) -> None:
        try:
            daemon.take_chunk(run_id, machine, ids, **extra)
        except Exception as exc:  # never ack an unfinished chunk: give it back (finals are skipped)
            raise Reject(f"{type(exc).__name__}: {exc}", requeue=True) from None

    @app.task(name=TRACE_MODEL, bind=True, acks_late=True)
    def trace_model(task, **job: Any) -> None:
        """A model test under the tracer (workers/tracejob.py), between chunks."""
        try:
            if tracejob.run(daemon, job, LEASE_TTL):
                daemon.recover(f"trace job {job['uid']} of {job['model']} hung or died")
        except Quarantined:
            daemon.quarantine()  # its result is written: the message is done; the worker stops consuming
        except Exception as exc:  # Redis away: give the message back (a claim skips a finished job)
            raise Reject(f"{type(exc).__name__}: {exc}", requeue=True) from None

    @signals.worker_ready.connect(weak=False)
    def _ready(sender: Any = None, **_: Any) -> None:
        daemon.consumer = sender
        log.info("worker_ready", worker=name, machine=profile.name, backend=backend, queue=profile.queue)
        if daemon.health == recovery.BAD:  # the devices did not open, even after a reset
            daemon.quarantine()

    @signals.worker_shutting_down.connect(weak=False)
    def _shutting_down(**_: Any) -> None:
        daemon.begin_stop()

    @signals.worker_shutdown.connect(weak=False)
    def _shutdown(**_: Any) -> None:
        daemon.stop()

    daemon.start()
    import gc

    gc.freeze()  # Celery, kombu and redis-py are long-lived: keep the collector off them
    log.info("executor_open", worker=name, health="GOOD" if daemon.executor.alive else "BAD")
    argv = [
        "worker",
        "--pool=solo",
        "--concurrency=1",
        f"--queues={profile.queue}",
        f"--hostname={name}",
        "--without-gossip",
        "--without-mingle",
        "--loglevel=WARNING",
    ]
    argv += ["--task-events"] if events else ["--without-heartbeat"]
    try:
        app.worker_main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    else:
        code = 0
    return EXIT_GAVE_UP if daemon.gave_up else code
