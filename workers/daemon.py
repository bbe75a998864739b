"""The worker daemon: one Celery process (solo pool, concurrency 1) on its machine's queue,
pinned to a device set, with one executor process that owns the devices.

A chunk message names vector ids; the vectors themselves are fetched from the run's hash. For
each vector: `begin` (skip it when it already has a final record, else bump its attempt counter
and take a lease), hand it to the executor with its timeout, `finish` (the attempt's record,
written once, and the run's aggregates in the same step); the finish of one vector and the begin
of the next share one round trip. A heartbeat thread
renews the current lease and the worker's liveness. The Celery process never imports ttnn.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import structlog

from broker.app import RUN_CHUNK, make_app
from broker.keys import Keys
from broker.results import Results, make_record
from sweeps import status
from sweeps.vector import VectorError, decode
from workers.executor import Executor, ExecutorDied

LEASE_TTL = 30
HEARTBEAT_EVERY = 5.0

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
        self.executor = Executor(machine, backend, devices, log=_executor_log())
        self.current: tuple[str, str] | None = None  # (run, vector) being run
        self.heartbeat = Heartbeat(self)

    # --- liveness ---------------------------------------------------------------------------

    def register(self) -> None:
        self.redis.hset(
            self.keys.worker(self.name),
            mapping={
                "machine": self.machine,
                "devices": ",".join(map(str, self.devices)),
                "backend": self.backend,
                "host": self.host,
                "pid": os.getpid(),
                "health": "UNKNOWN",
                "current": "",
                "started": time.time(),
                "heartbeat": time.time(),
            },
        )
        self.redis.zadd(self.keys.workers(), {self.name: time.time()})

    def beat(self) -> None:
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.keys.worker(self.name), "heartbeat", now)
        pipe.zadd(self.keys.workers(), {self.name: now})
        if self.current is not None:
            pipe.expire(self.keys.lease(*self.current), LEASE_TTL)
        pipe.execute()

    def set_health(self, health: str) -> None:
        self.redis.hset(self.keys.worker(self.name), "health", health)

    def start(self) -> None:
        self.register()
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
        self.heartbeat.stopped.set()
        self.executor.stop()
        self.redis.hset(self.keys.worker(self.name), mapping={"health": "STOPPED", "current": ""})

    # --- work -------------------------------------------------------------------------------

    def run_chunk(self, run_id: str, ids: list[str]) -> dict[str, int]:
        """Run a chunk's vectors in order. Each round trip to Redis writes the record of the vector
        just run and begins the next one, so a vector costs one Redis call and one executor call."""
        counts = {"ran": 0, "skipped": 0}
        payloads = self.redis.hmget(self.keys.vectors(run_id), ids) if ids else []
        done: dict[str, Any] | None = None
        for vector_id, payload in zip(ids, payloads, strict=True):
            if payload is None:  # the run was deleted since it was queued
                counts["skipped"] += 1
                continue
            try:
                vector = decode(payload)
            except VectorError as exc:
                log.error("bad_vector", run=run_id, vector=vector_id, error=str(exc))
                continue
            attempt = self.results.step(done, (run_id, vector["id"]), LEASE_TTL)
            done = None
            if attempt < 0:
                counts["skipped"] += 1
                continue
            self.current = (run_id, vector["id"])
            done = self._run_one(run_id, vector, payload, attempt)
            counts["ran"] += 1
        if done is not None:
            self.results.finish(done)
        self.current = None
        log.debug("chunk_done", run=run_id, **counts)
        return counts

    def _run_one(self, run_id: str, vector: dict[str, Any], payload: bytes, attempt: int) -> dict[str, Any]:
        start = time.time()
        if not self.executor.alive and not self.open_executor():
            outcome = {"status": status.INFRA, "message": "the executor could not open the device"}
        else:
            outcome = self.executor.run(payload, float(vector["timeout"]))
        if outcome["status"] != status.PASS:
            log.info("vector_not_passed", run=run_id, vector=vector["id"], op=vector["op"], status=outcome["status"])
        return make_record(
            vector,
            run_id,
            attempt,
            outcome,
            backend=self.backend,
            worker=self.name,
            host=self.host,
            devices=self.devices,
            ttnn_version=self.executor.ttnn_version,
            start=start,
            end=time.time(),
        )


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


def run_worker(redis_url: str, keys: Keys, machine: str, devices: list[int], backend: str, name: str) -> int:
    """Run a Celery solo worker on the machine's queue until it is told to stop."""
    import redis as redis_lib
    from celery import signals

    from sweeps.profiles import get_profile

    configure_logging()
    profile = get_profile(machine)
    app = make_app(redis_url, keys)
    client = redis_lib.Redis.from_url(redis_url)
    daemon = WorkerDaemon(client, keys, profile.name, devices, backend, name)

    @app.task(name=RUN_CHUNK, bind=True, acks_late=True)
    def run_chunk(task, run_id: str, machine: str, ids: list[str]) -> None:
        daemon.run_chunk(run_id, ids)

    @signals.worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        log.info("worker_ready", worker=name, machine=profile.name, backend=backend, queue=profile.queue)

    @signals.worker_shutdown.connect(weak=False)
    def _shutdown(**_: Any) -> None:
        daemon.stop()

    daemon.start()
    log.info("executor_open", worker=name, health="GOOD" if daemon.executor.alive else "BAD")
    argv = [
        "worker",
        "--pool=solo",
        "--concurrency=1",
        f"--queues={profile.queue}",
        f"--hostname={name}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=WARNING",
    ]
    app.worker_main(argv)
    return 0
