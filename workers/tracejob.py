"""A trace job on a worker: one registered model test under ttnn's tracer, between sweep chunks.

The worker's executor owns the devices, so it is closed first and the model test opens them itself
(in a child process of its own session, the worker's device set or mock cluster in its env); the
next chunk opens the executor again. Past the entry's timeout the test's process group is killed and
the devices are reset and health-checked as after a hung vector (a failed check quarantines the
worker, its result already written). The machine info is this host's (tt-smi when present; the
profile's under the emulated backend, whose mock cluster it is). Only passed tests' configs are
kept (tracer/capture.py); they go back deduplicated with counts as one msgpack result
(broker/traces/jobs.py), written once whatever redelivers the job.
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from collections import deque
from typing import Any

import structlog

from broker.traces import jobs as tracejobs
from broker.traces.jobs import Job
from sweeps import status
from tracer.capture import CaptureResult, capture
from tracer.errors import InputError
from tracer.machine import detect_machine_info
from workers.policies import lost
from workers.policies.lease import Stamp

log = structlog.get_logger("sweepctl.worker")
TAIL_LINES = 30  # lines of the test's output kept in a failed result's message


class _Tail:
    """The last lines the traced test printed (its failure reason), nothing more."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque(maxlen=TAIL_LINES)

    def write(self, line: str) -> None:
        self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)


def run(daemon: Any, kwargs: dict[str, Any], lease_ttl: int) -> bool:
    """Run the job unless it is done or another worker holds it. True when the devices need a reset
    and health check (the test hung or died of a signal); the caller recovers them."""
    job = Job(**kwargs)
    sent = Stamp.now()
    got = tracejobs.claim(daemon.redis, daemon.keys, job.uid, daemon.name, daemon.token, lease_ttl)
    if got.action in ("done", "held", "unknown"):
        log.info("trace_job_skipped", worker=daemon.name, uid=job.uid, why=got.action)
        return False
    if got.action == "dead":
        why = lost.dead(got)[1]["message"]
        tracejobs.finish(daemon.redis, daemon.keys, job.uid, _result(daemon, job, status.TRACE_INFRA, why), got.lease)
        return False
    lease_key = daemon.keys.trace_lease(job.uid)
    daemon.leases.take(lease_key, got.lease, sent)  # the heartbeat renews it with the vectors' leases
    try:
        log.info("trace_job_started", worker=daemon.name, uid=job.uid, model=job.model, attempt=got.attempt)
        try:
            result, reset = _trace(daemon, job)
        except Exception as exc:  # sweepctl's own failure around the test: said in the record, not retried
            log.exception("trace_job_failed", worker=daemon.name, uid=job.uid)
            why = f"on {daemon.host}: {type(exc).__name__}: {exc}"
            result, reset = _result(daemon, job, status.TRACE_INFRA, why, machine_info=machine_info(daemon)), False
        tracejobs.finish(daemon.redis, daemon.keys, job.uid, result, got.lease)
        log.info("trace_job_done", worker=daemon.name, uid=job.uid, outcome=result["outcome"],
                 configs=len(result["configs"]), seconds=result.get("duration_s"))  # fmt: skip
    finally:
        daemon.leases.forget(lease_key)
    return reset


def machine_info(daemon: Any) -> dict[str, Any]:
    if daemon.backend == "emulated":
        return daemon.profile.machine_info()
    return detect_machine_info() or daemon.profile.machine_info()


def _result(daemon: Any, job: Job, outcome: str, message: str, **fields: Any) -> dict[str, Any]:
    return tracejobs.make_result(job, outcome, message, worker=daemon.name, backend=daemon.backend,
                                 ttnn_version=_ttnn_version(), **fields)  # fmt: skip


def _ttnn_version() -> str:
    try:
        return importlib.metadata.version("ttnn")
    except importlib.metadata.PackageNotFoundError:
        return ""


def _trace(daemon: Any, job: Job) -> tuple[dict[str, Any], bool]:
    """(the job's result, whether the devices need recovery)."""
    daemon.executor.stop()  # the model test opens the devices itself
    info = machine_info(daemon)
    env = {**daemon.executor.env(), **job.env}
    root = os.path.expanduser(os.path.expandvars(job.root))
    tail = _Tail()
    started = time.time()
    try:
        captured = capture(job.test, info, env_extra=env, trace_uid=job.uid, output=tail, timeout=job.timeout,
                           cwd=root, pytest_args=["-m", job.markers] if job.markers else None)  # fmt: skip
    except InputError as exc:  # the test is not on this host
        return _result(daemon, job, status.TRACE_INFRA, f"on {daemon.host}: {exc}", started=started,
                       duration_s=0.0, machine_info=info), False  # fmt: skip
    duration = round(time.time() - started, 3)
    outcome, message = classify(captured, job.timeout, tail.text())
    result = _result(daemon, job, outcome, message, tests=captured.tests, machine_info=info, started=started,
                     duration_s=duration, configs=tracejobs.result_configs(captured.entries))  # fmt: skip
    return result, captured.timed_out or captured.returncode < 0


def classify(captured: CaptureResult, timeout: float, tail: str) -> tuple[str, str]:
    """The job's outcome and why: timeout; failed when a test failed or none passed; else passed."""
    if captured.timed_out:
        return status.TRACE_TIMEOUT, f"no result after {timeout:g} s: the test's process group was killed"
    states = set(captured.tests.values())
    if captured.returncode < 0:
        return status.TRACE_FAILED, f"the test process died of signal {-captured.returncode}\n{tail}"
    if not captured.tests:
        return status.TRACE_FAILED, f"pytest exited {captured.returncode} before any test ran\n{tail}"
    if "failed" in states:
        failed = sorted(n for n, s in captured.tests.items() if s == "failed")
        return status.TRACE_FAILED, f"{len(failed)} failed: {', '.join(failed[:3])}\n{tail}"
    if "passed" in states:
        return status.TRACE_PASSED, ""
    return status.TRACE_FAILED, "no test passed (all skipped)"
