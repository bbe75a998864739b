"""The baseline a sweepctl worker is measured against: a plain Celery app, one no-op task per
vector, solo pool, acks_late, msgpack (DESIGN.md §5). Used only by the benchmarks."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0")
app = Celery("plain", broker=URL, set_as_current=False)
app.conf.update(
    accept_content=["msgpack"],
    task_serializer="msgpack",
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
)
_client = redis.Redis.from_url(URL)


@app.task(name="plain.noop")
def noop(index: int, last: int, payload: bytes) -> None:
    """Does nothing but stamp the first and last task, so the run's span can be read back."""
    if index in (0, last):
        _client.hset("plain:bench", str(index), repr(time.time()))
