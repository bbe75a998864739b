"""The baselines a sweepctl worker is measured against: a plain Celery app, solo pool, acks_late,
msgpack (DESIGN.md §5). Used only by the benchmarks.

* `plain.noop`: one no-op task per vector (what chunking alone buys);
* `plain.chunk`: the fair one, with sweepctl's chunking: one message of k vector ids, a task that
  reads their payloads in one HMGET, runs each in-process and writes one result per vector to
  Redis as it finishes (one HSET each: a result is durable once its vector ends, as sweepctl's
  records are). No claims, leases, attempts, aggregates or executor process: what sweepctl adds
  over it is the reliability and reporting machinery, and that is what the ratio measures.
"""

from __future__ import annotations

import os
import time

import msgpack
import redis
from celery import Celery

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0")
STAMPS = "plain:bench"  # task index -> unix time, for the first and last vector of a run
VECTORS = "plain:vectors"  # vector id -> msgpack payload, as sweepctl's enqueue stores them
RESULTS = "plain:results"  # vector id -> msgpack result


def make_app(url: str) -> Celery:
    """The plain app on `url`: the worker process imports it from BENCH_REDIS_URL, a benchmark makes
    its own to publish (its redis-server differs from one test to the next)."""
    plain = Celery("plain", broker=url, set_as_current=False)
    plain.conf.update(
        accept_content=["msgpack"],
        task_serializer="msgpack",
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
    )
    return plain


app = make_app(URL)
_client = redis.Redis.from_url(URL)


@app.task(name="plain.noop")
def noop(index: int, last: int, payload: bytes) -> None:
    """Does nothing but stamp the first and last task, so the run's span can be read back."""
    if index in (0, last):
        _client.hset(STAMPS, str(index), repr(time.time()))


def run_vector(vector: dict) -> dict:
    """The no-op test op, in-process: PASS at once (sweepctl's `sweepctl.test.noop`)."""
    return {"vector": vector["id"], "status": "PASS", "pcc": 1.0, "e2e_ms": 0.0, "end": time.time()}


@app.task(name="plain.chunk")
def chunk(ids: list[str], first: int, last: int) -> None:
    """k vectors in one message: one HMGET of their payloads, then run each and write its result."""
    for offset, payload in enumerate(_client.hmget(VECTORS, ids)):
        result = run_vector(msgpack.unpackb(payload, raw=False))
        _client.hset(RESULTS, result["vector"], msgpack.packb(result))
        index = first + offset
        if index in (0, last):
            _client.hset(STAMPS, str(index), repr(time.time()))


def upload_and_publish(client: redis.Redis, producer_app: Celery, payloads: dict[str, bytes], size: int) -> int:
    """The chunked baseline's enqueue: store the payloads (pipelined HSET batches) and publish one
    `plain.chunk` message per `size` ids; returns the number of messages."""
    ids = list(payloads)
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(ids), 10_000):
        pipe.hset(VECTORS, mapping={vid: payloads[vid] for vid in ids[start : start + 10_000]})
        pipe.execute()
    messages = 0
    with producer_app.producer_or_acquire() as producer:
        for start in range(0, len(ids), size):
            producer_app.send_task("plain.chunk", args=(ids[start : start + size], start, len(ids) - 1),
                                   producer=producer)  # fmt: skip
            messages += 1
    return messages
