"""The record writer: a worker's records and releases go to Redis from a background thread, so the
device never waits on a Redis round trip between vectors.

The daemon queues a vector's `finish` after the executor answers; the writer turns it into a
script op (packing the record off the daemon's path) and sends whatever has queued up, in order,
one script call per run. Ops are idempotent, so a batch that failed (Redis restarting) is resent
until it lands, for `give_up_after` seconds at most: then the writer logs what it drops, stops,
and calls `on_give_up` (the daemon exits, and its chunk is queued again by a live worker). `flush`
blocks until everything queued is in Redis, or the writer gave up, or its timeout passed.

The records and bookings that landed stay here for a while (`forget_before`): a Redis that restarts
without its last writes (`appendfsync everysec` loses up to a second) gets them again (`resend`), so
nothing that ran runs again. The writer resends them itself when it reaches Redis again after failing
to, before anything else (a chunk waits for its records before it ends: so before this worker takes a
redelivered copy of it), and the heartbeat when it sees a new Redis process the writer did not.
Releases are not kept: one resent after a newer claim of the same attempt number would take that
number back from under its holder.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from broker.results import Results

log = structlog.get_logger("sweepctl.writer")


class RecordWriter(threading.Thread):
    def __init__(
        self,
        results: Results,
        give_up_after: float,
        on_give_up: Callable[[str], None],
        retry_every: float = 0.5,
        gather: float = 0.05,
    ) -> None:
        super().__init__(name="record-writer", daemon=True)
        self.results = results
        self.give_up_after = give_up_after
        self.on_give_up = on_give_up
        self.retry_every = retry_every
        # let ops accumulate this long (a flush cuts it short): at 4 ms ops a batch is ~12 records,
        # not ~1.5 as at 5 ms, so the thread's wake-ups and script calls per vector fall ~8x
        self.gather = gather
        self._queue: deque[tuple[str, Any]] = deque()
        self._wake = threading.Condition()
        self._pending = 0  # queued or in flight
        self._stopping = False
        self._flushing = False
        self.failing_since: float | None = None  # monotonic time of the first failure of the current streak
        self.broken = False  # gave up: nothing is written any more
        self.landed: deque[tuple[float, str, list[Any]]] = deque()  # (monotonic, run, op) of records that landed
        self.server: str | None = None  # the Redis process (INFO run_id) they landed in
        self._resending = threading.Lock()

    def attempt_released(self, run_id: str, vector_id: str, attempt: int, lease: str) -> None:
        self._put(run_id, ("release", vector_id, attempt, lease))

    def attempt_finished(self, record: dict[str, Any], final: bool = True, lease: str = "") -> None:
        self._put(record["run"], ("finish", record, final, lease))

    def unrun(self, run_id: str, ops: list[list[Any]]) -> None:
        """Bulk ops (Results.unrun_ops) sent in order with the records."""
        for op in ops:
            self._put(run_id, ("ops", op))

    def _put(self, run_id: str, item: tuple[Any, ...]) -> None:
        with self._wake:
            self._queue.append((run_id, item))
            self._pending += 1
            if len(self._queue) == 1:  # only the first op wakes the writer; the rest gather
                self._wake.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued op is in Redis; False on timeout or when the writer gave up."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._wake:
            self._flushing = True
            self._wake.notify_all()
            try:
                while self._pending and not self.broken:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._wake.wait(left)
            finally:
                self._flushing = False
        return not self.broken

    def forget_before(self, since: float) -> None:
        landed = self.landed
        while landed and landed[0][0] < since:
            landed.popleft()

    def resend(self, server: str, since: float = float("-inf")) -> None:
        """Redis answers from the process `server` (its INFO run_id). When the ops that landed went to
        another one, it restarted, maybe without its last second: those that landed after `since`
        (monotonic) are written again; a record there already is left alone (every op is idempotent)."""
        with self._resending:
            if server == self.server:
                return
            by_run: dict[str, list[list[Any]]] = {}
            for when, run_id, op in list(self.landed):
                if when >= since:
                    by_run.setdefault(run_id, []).append(op)
            ops = kept = 0
            for run_id, run_ops in by_run.items():
                for start in range(0, len(run_ops), 1000):
                    batch = run_ops[start : start + 1000]
                    kept += self.results.write(run_id, batch)[0]
                    ops += len(batch)
            self.server = server
        if ops:
            log.warning("records_resent_after_redis_restart", ops=ops, finals_kept=kept)

    def failing_for(self) -> float:
        """Seconds the writer has been failing to reach Redis (0 when its last batch landed)."""
        since = self.failing_since
        return 0.0 if since is None else time.monotonic() - since

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
            sent = self._send(batch)
            with self._wake:
                self._pending -= len(batch)
                if not sent:  # gave up: what is still queued is dropped with it
                    self.broken = True
                    self._pending -= len(self._queue)
                    self._queue.clear()
                self._wake.notify_all()
            if not sent:
                self.on_give_up(f"the record writer could not reach Redis for {self.give_up_after:g} s")
                return

    def _send(self, batch: list[tuple[str, tuple[Any, ...]]]) -> bool:
        results = self.results
        by_run: dict[str, list[list[Any]]] = {}
        kept = []
        for run_id, item in batch:  # ops of one run keep their order; runs are independent
            kind, args = item[0], item[1:]
            if kind == "release":
                op = results.release_op(run_id, *args)
            else:
                op = results.finish_op(*args) if kind == "finish" else args[0]
                kept.append((run_id, op))
            by_run.setdefault(run_id, []).append(op)
        while True:
            try:
                if self.failing_since is not None:  # reaching Redis again: a restarted one first gets what it lost
                    self.resend(self.results.redis.info("server")["run_id"])
                if len(by_run) == 1:  # the usual batch: one EVALSHA (a pipeline would ask SCRIPT EXISTS first)
                    ((run_id, ops),) = by_run.items()
                    replies = [self.results.write(run_id, ops)]
                else:
                    pipe = self.results.redis.pipeline(transaction=False)
                    for run_id, ops in by_run.items():
                        self.results.write(run_id, ops, pipe=pipe)
                    replies = pipe.execute()
                self.failing_since = None
                now = time.monotonic()
                self.landed.extend((now, run_id, op) for run_id, op in kept)
                late = sum(reply[0] for reply in replies)
                if late:  # a vector settled elsewhere first: its record here would contradict its final
                    log.warning("late_records_dropped", count=late)
                return True
            except Exception as exc:  # Redis away: keep the records and try again, for a while
                now = time.monotonic()
                self.failing_since = self.failing_since or now
                if now - self.failing_since >= self.give_up_after:
                    log.error("record_writer_gave_up", error=str(exc), ops_dropped=len(batch) + len(self._queue))
                    return False
                log.warning("record_write_failed", error=str(exc), ops=len(batch))
                time.sleep(self.retry_every)
