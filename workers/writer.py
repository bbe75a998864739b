"""The record writer: a worker's attempt starts and records go to Redis from a background thread,
so the device never waits on a Redis round trip between vectors.

The daemon queues a vector's `start` before handing it to the executor and its `finish` after;
the writer turns them into script ops (packing the record off the daemon's path) and sends
whatever has queued up, in order, one script call per run. Ops are idempotent,
so a batch that failed (Redis restarting) is resent until it lands. `flush` blocks until
everything queued is in Redis: the daemon flushes before a chunk's message is acked.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import structlog

from broker.results import Results

log = structlog.get_logger("sweepctl.writer")


class RecordWriter(threading.Thread):
    def __init__(self, results: Results, retry_every: float = 0.5, gather: float = 0.005) -> None:
        super().__init__(name="record-writer", daemon=True)
        self.results = results
        self.retry_every = retry_every
        self.gather = gather  # let ops accumulate this long: fewer, larger script calls
        self._queue: deque[tuple[str, Any]] = deque()
        self._wake = threading.Condition()
        self._pending = 0  # queued or in flight
        self._stopping = False
        self._flushing = False

    def attempt_started(self, run_id: str, vector_id: str, attempt: int, lease_ttl: int) -> None:
        self._put(run_id, ("start", vector_id, attempt, lease_ttl))

    def attempt_released(self, run_id: str, vector_id: str, attempt: int) -> None:
        self._put(run_id, ("release", vector_id, attempt))

    def attempt_finished(self, record: dict[str, Any], final: bool = True) -> None:
        self._put(record["run"], ("finish", record, final))

    def _put(self, run_id: str, item: tuple[Any, ...]) -> None:
        with self._wake:
            self._queue.append((run_id, item))
            self._pending += 1
            if len(self._queue) == 1:  # only the first op wakes the writer; the rest gather
                self._wake.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued op is in Redis; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._wake:
            self._flushing = True
            self._wake.notify_all()
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._wake.wait(left)
            self._flushing = False
        return True

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()

    def run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if not self._queue:
                    return
                if not (self._flushing or self._stopping):
                    self._wake.wait(self.gather)  # let ops gather; a flush cuts it short
                batch = list(self._queue)
                self._queue.clear()
            self._send(batch)
            with self._wake:
                self._pending -= len(batch)
                self._wake.notify_all()

    def _send(self, batch: list[tuple[str, tuple[Any, ...]]]) -> None:
        results = self.results
        by_run: dict[str, list[list[Any]]] = {}
        for run_id, item in batch:  # ops of one run keep their order; runs are independent
            kind, args = item[0], item[1:]
            if kind == "finish":
                op = results.finish_op(*args)
            elif kind == "start":
                op = results.start_op(run_id, *args)
            else:
                op = results.release_op(run_id, *args)
            by_run.setdefault(run_id, []).append(op)
        while True:
            try:
                pipe = self.results.redis.pipeline(transaction=False)
                for run_id, ops in by_run.items():
                    self.results.write(run_id, ops, pipe=pipe)
                pipe.execute()
                return
            except Exception as exc:  # Redis away: keep the records and try again
                log.warning("record_write_failed", error=str(exc), ops=len(batch))
                time.sleep(self.retry_every)
