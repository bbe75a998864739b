"""The worker daemon: one Celery process (solo pool, concurrency 1) on its machine's queue,
pinned to a device set, with one executor process that owns the devices.

A chunk message names vector ids; one round trip claims them (payloads, final statuses, attempt
counters): vectors that already have a final record are skipped. For each other vector: queue its
`start` (attempt number, lease), hand it to the executor with its timeout, queue its `finish`
(the attempt's record, written once, and the run's aggregates in the same step). The record
writer thread sends them, so the device never waits on Redis; the chunk is acked only after
everything is written. A heartbeat thread
renews the current lease and the worker's liveness. The Celery process never imports ttnn.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import redis.exceptions as redis_errors
import structlog

from broker import registry
from broker.app import RUN_CHUNK, make_app
from broker.keys import Keys
from broker.results import LEASED, RUN, Results, make_record
from sweeps import status
from sweeps.profiles import get_profile
from sweeps.vector import VectorError, decode
from workers import recovery
from workers.executor import Executor, ExecutorDied
from workers.writer import RecordWriter

LEASE_TTL = int(os.environ.get("SWEEPCTL_LEASE_TTL", "30"))
MAX_LOST_ATTEMPTS = 2  # a vector whose worker died in it twice is booked INFRA, not run again
HEARTBEAT_EVERY = float(os.environ.get("SWEEPCTL_HEARTBEAT", "5"))


class Quarantined(Exception):
    """The device set failed its reset or health check: stop consuming, give the chunk back."""


class GivenBack(Exception):
    """A warm shutdown stopped the chunk after the running vector: the rest goes back to the queue."""


log = structlog.get_logger("sweepctl.worker")


class Heartbeat(threading.Thread):
    """Renews the worker's liveness and the lease of the vector it runs, every few seconds."""

    def __init__(self, daemon: WorkerDaemon) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.owner = daemon
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_EVERY):
            try:
                self.owner.beat()
            except Exception as exc:  # Redis away: the lease lapses, which is the point of leases
                log.warning("heartbeat_failed", error=str(exc))


class WorkerDaemon:
    def __init__(self, redis: Any, keys: Keys, machine: str, devices: list[int], backend: str, name: str) -> None:
        self.redis = redis
        self.keys = keys
        self.machine = machine
        self.devices = devices
        self.backend = backend
        self.name = name
        self.host = socket.gethostname()
        self.results = Results(redis, keys, worker=name)
        self.writer = RecordWriter(self.results)  # redis-py's pool gives the thread its own connection
        self.executor = Executor(machine, backend, devices, log=_executor_log())
        self.current: list[tuple[str, str]] = []  # (run, vector) in the executor: running, and next
        self.canceling: tuple[str, str] | None = None  # set by the heartbeat when a run is canceled
        self.stopping = False  # a warm shutdown: finish the running vector, give the rest back
        self.health = recovery.UNKNOWN
        self.profile = get_profile(machine)
        self.consumer: Any = None  # Celery's consumer, to stop and resume consuming
        self.heartbeat = Heartbeat(self)
        self.instance = ""  # the registry's id of this worker's row, once registered

    # --- liveness ---------------------------------------------------------------------------

    def register(self) -> None:
        """Take this worker's name (refused while a live worker holds it: broker/registry.py)."""
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
        self.instance = registry.register(self.redis, self.keys, self.name, row)

    def beat(self) -> None:
        now = time.time()
        current = list(self.current)
        pipe = self.redis.pipeline(transaction=False)
        worker = {"heartbeat": now, "current": current[0][1] if current else ""}
        pipe.hset(self.keys.worker(self.name), mapping=worker)
        pipe.zadd(self.keys.workers(), {self.name: now})
        for run_id, vector_id in current:
            pipe.expire(self.keys.lease(run_id, vector_id), LEASE_TTL)
        runs = sorted({run_id for run_id, _ in current})
        for run_id in runs:
            pipe.hget(self.keys.run(run_id), "state")
        pipe.hget(self.keys.worker(self.name), "release")
        replies = pipe.execute()
        states = dict(zip(runs, replies[-1 - len(runs) : -1], strict=True))
        if current and states.get(current[0][0]) == b"canceled" and self.canceling is None:
            self.canceling = current[0]  # the main thread books the killed vector CANCELED
            self.executor.kill_group()
        if replies[-1] and self.health == recovery.BAD and self.consumer is not None:
            self.redis.hdel(self.keys.worker(self.name), "release")
            self.consumer.controller.hub.call_soon(self.release)

    def set_health(self, health: str, why: str = "") -> None:
        self.health = health
        self.redis.hset(self.keys.worker(self.name), mapping={"health": health, "health_reason": why})

    def recover(self, cause: str) -> None:
        """After a hang or crash: reset, respawn, health check; quarantine when that fails."""
        self.set_health(recovery.UNKNOWN, cause)
        result = recovery.recover(self.executor, self.profile, self.backend)
        log.info("recovery", worker=self.name, health=result.health, why=result.message)
        self.set_health(result.health, result.message)
        if result.health != recovery.GOOD:
            raise Quarantined(result.message)

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

    def open_executor(self) -> bool:
        try:
            self.executor.start()
        except ExecutorDied as exc:
            log.error("executor_open_failed", error=exc.description)
            self.set_health("BAD")
            return False
        self.set_health("GOOD")
        return True

    def stop(self) -> None:
        self.writer.flush(timeout=30)
        self.writer.stop()
        self.heartbeat.stopped.set()
        self.executor.stop()
        registry.mark_stopped(self.redis, self.keys, self.name, self.instance)

    # --- work -------------------------------------------------------------------------------

    def run_chunk(self, run_id: str, ids: list[str]) -> dict[str, int]:
        """Run a chunk's vectors in order; returns once every record is in Redis (then Celery acks).

        The executor is kept one vector ahead: the next vector waits in its pipe while the daemon
        books the previous one, so the device does not idle on bookkeeping. A vector's timeout
        counts from when it reaches the head (the executor starts it the moment the one before
        ends). After a hang or crash the devices are reset and health-checked before the next
        vector; the vector behind never started and is sent again, same attempt. A vector that
        crashed the executor runs once more (a poison vector crashes it twice and ends CRASH). When recovery
        fails the chunk goes back to the queue (Quarantined)."""
        counts = {"ran": 0, "skipped": 0}
        claims, expired = self._claim_settled(run_id, ids), self._expired(run_id)
        todo: deque[_Item] = deque()
        for claim in claims:
            if claim.payload is None or claim.action != RUN:  # deleted, final, or running elsewhere
                counts["skipped"] += 1
                continue
            try:
                item = _Item(decode(claim.payload), claim.payload, claim.attempt)
            except VectorError as exc:
                log.error("bad_vector", run=run_id, vector=claim.vector_id, error=str(exc))
                continue
            if claim.lost:  # its worker died in it: book that attempt INFRA, retry once at most
                lost = _Item(item.vector, item.payload, claim.tried)
                infra = {"status": status.INFRA, "message": f"attempt {claim.tried}: its worker died while running it"}
                self._book(run_id, lost, infra, final=claim.tried >= MAX_LOST_ATTEMPTS)
                if claim.tried >= MAX_LOST_ATTEMPTS:
                    continue
            if expired:
                self._book(run_id, item, {"status": status.EXPIRED, "message": "the run expired before it ran"})
            else:
                todo.append(item)
        inflight: deque[_Item] = deque()
        try:
            while todo or inflight:
                while todo and len(inflight) < (0 if self.stopping else 2):
                    item = todo.popleft()
                    self.writer.attempt_started(run_id, item.vector["id"], item.attempt, LEASE_TTL)
                    item.begun = True
                    if not self.executor.alive and not self.open_executor():
                        self._book(run_id, item, {"status": status.INFRA, "message": "the executor could not open"})
                        continue
                    item.started = time.time() if not inflight else None
                    if not self.executor.send(item.payload):
                        todo.appendleft(item)
                        self.executor.kill()
                        break
                    inflight.append(item)
                self.current = [(run_id, i.vector["id"]) for i in inflight]
                if not inflight:
                    if self.stopping and todo:  # what is in the executor has finished: hand back the rest
                        raise GivenBack(f"warm shutdown of {self.name}")
                    continue
                head = inflight.popleft()
                head.started = head.started or time.time()
                limit = float(head.vector["timeout"])
                outcome = self.executor.receive(limit - (time.time() - head.started), limit)
                now = time.time()
                canceled = self.canceling == (run_id, head.vector["id"])
                if canceled:
                    outcome = {"status": status.CANCELED, "message": "killed while running: the run was canceled"}
                retry = outcome["status"] == status.CRASH and not head.crashed  # the device's fault, or the op's?
                self._book(run_id, head, outcome, now, final=not retry)
                counts["ran"] += 1
                if retry:  # once more on fresh devices; a vector that kills the executor twice is CRASH
                    todo.appendleft(_Item(head.vector, head.payload, head.attempt + 1, crashed=True))
                if canceled:  # the rest of the chunk: booked CANCELED by `sweepctl cancel`, or here if started
                    for item in inflight:
                        self._book(run_id, item, {"status": status.CANCELED, "message": "the run was canceled"})
                    inflight.clear()
                    todo.clear()
                if not self.executor.alive:  # hang, crash or cancel: the executor is gone with its pipe
                    todo.extendleft(reversed(inflight))
                    inflight.clear()
                    self.current = []
                    self.canceling = None
                    self.recover(f"{outcome['status']} on {head.vector['op']} vector {head.vector['id'][:12]}")
                elif inflight:
                    inflight[0].started = now
        except (Quarantined, GivenBack) as exc:
            self.current = []
            for item in [*inflight, *todo]:  # started here but never run: free them for the next worker
                if item.begun:
                    self.writer.attempt_released(run_id, item.vector["id"], item.attempt)
            self.writer.flush()
            if isinstance(exc, Quarantined):
                self.quarantine()
            raise
        self.current = []
        self.writer.flush()
        log.debug("chunk_done", run=run_id, **counts)
        return counts

    def _claim_settled(self, run_id: str, ids: list[str]) -> list[Any]:
        """Claim a chunk; a vector another worker holds the lease of (this chunk came back past the
        visibility timeout) is waited for: it ends final there, or its lease lapses and it is ours."""
        claims = self._claim(run_id, ids)
        while True:
            leased = [c.vector_id for c in claims if c.action == LEASED]
            if not leased:
                return claims
            time.sleep(HEARTBEAT_EVERY)
            again = {c.vector_id: c for c in self._claim(run_id, leased)}
            claims = [again.get(c.vector_id, c) for c in claims]

    def _claim(self, run_id: str, ids: list[str]) -> list[Any]:
        """Claim a chunk, waiting out a Redis that is restarting (the message stays unacked)."""
        delay = 0.2
        while True:
            try:
                return self.results.claim(run_id, ids)
            except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
                log.warning("claim_retry", run=run_id, error=str(exc))
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _expired(self, run_id: str) -> bool:
        expires = self.redis.hget(self.keys.run(run_id), "expires")
        return expires is not None and time.time() > float(expires)

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
            start=item.started,
            end=end or time.time(),
        )
        self.writer.attempt_finished(record, final)


@dataclass
class _Item:
    """A vector of the chunk being run: decoded, its wire bytes, its attempt, when it started."""

    vector: dict[str, Any]
    payload: bytes
    attempt: int
    started: float | None = None
    begun: bool = False  # its attempt start was written
    crashed: bool = False  # an earlier attempt killed the executor


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
    client = redis_lib.Redis.from_url(redis_url)
    daemon = WorkerDaemon(client, keys, profile.name, devices, backend, name)

    @app.task(name=RUN_CHUNK, bind=True, acks_late=True)
    def run_chunk(task, run_id: str, machine: str, ids: list[str]) -> None:
        try:
            daemon.run_chunk(run_id, ids)
        except Exception as exc:  # never ack a chunk that did not finish: give it back (finals are skipped)
            raise Reject(f"{type(exc).__name__}: {exc}", requeue=True) from None

    @signals.worker_ready.connect(weak=False)
    def _ready(sender: Any = None, **_: Any) -> None:
        daemon.consumer = sender
        log.info("worker_ready", worker=name, machine=profile.name, backend=backend, queue=profile.queue)

    @signals.worker_shutting_down.connect(weak=False)
    def _shutting_down(**_: Any) -> None:
        daemon.stopping = True

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
    app.worker_main(argv)
    return 0
