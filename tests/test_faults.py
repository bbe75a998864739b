"""Fault injection with real processes: a real redis-server, real worker daemons (Celery solo
workers with their executors), and the test-only ops that hang, ignore SIGTERM, crash, exit,
raise or exhaust memory. Each test reads back the records the workers wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import redis

from broker.app import make_app
from broker.coordinator import Plan, publish
from broker.keys import Keys
from broker.results import parse_final
from sweeps import status
from sweeps.suites import Expansion, Selection
from sweeps.vector import make_vector
from tests.conftest import (
    ROOT,
    Worker,
    executors_of,
    redis_process,
    running_redis,
    start_worker,
    stop_processes,
    wait_for_redis,
)

PREFIX = "faults"
pytestmark = pytest.mark.slow


def vector(op: str, n: int, timeout: float = 3.0, mesh: tuple[int, int] = (1, 2), **kwargs):
    return make_vector(f"sweepctl.test.{op}", "faults", "n300", list(mesh), [n], kwargs, timeout)


class Cluster:
    """Workers on one redis-server, and the records they wrote."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url, self.tmp = url, tmp
        self.client = redis.Redis.from_url(url)
        self.keys = Keys(PREFIX)
        self.procs: list[Worker] = []
        self.reset_log = tmp / "resets.log"
        self.starts_log = tmp / "starts.log"  # one line per test op started by any executor (workers/testops.py)

    def worker(self, name: str, reset: str | None = None, defaults: bool = False, **extra: str) -> Worker:
        """A worker, once its executor is open; `defaults`: the heartbeat a user runs with (5 s), not
        the tests' 0.5 s."""
        return self.workers(name, reset=reset, defaults=defaults, **extra)[name]

    def workers(self, *names: str, reset: str | None = None, defaults: bool = False, **extra: str) -> dict[str, Worker]:
        """Workers alike but for their names, started at once (their imports and executors' opens
        overlap), returned once every executor is open."""
        started = {}
        for name in names:
            env = {
                **os.environ,
                "SWEEPCTL_ENABLE_TEST_OPS": "1",
                "SWEEPCTL_HEARTBEAT": "0.5",
                "SWEEPCTL_RESET_COMMAND": reset or f"sh -c 'echo {name} >> {self.reset_log}'",
                "SWEEPCTL_TEST_OP_LOG": str(self.starts_log),
                **extra,
            }
            if defaults:
                del env["SWEEPCTL_HEARTBEAT"]
            flags = ("--machine", "n300", "--name", name, "--prefix", PREFIX)
            started[name] = start_worker(self.url, self.tmp / f"{name}.log", *flags, env=env)
            self.procs.append(started[name])
        for name in names:
            self.wait(lambda name=name: self.health(name) == "GOOD", 120, f"{name} did not open its executor")
        return started

    def health(self, name: str) -> str:
        value = self.client.hget(self.keys.worker(name), "health")
        return value.decode() if value else ""

    def enqueue(self, run_id: str, vectors: list[dict], expires: float | None = None, chunk: int | None = None) -> None:
        plan = Plan(run_id, Selection(), Expansion.of(vectors), {})
        size = chunk or len(vectors)
        publish(make_app(self.url, self.keys), self.client, self.keys, plan, chunk=size, expires=expires)

    def starts(self) -> list[tuple[float, str, int]]:
        """(time, vector id, worker pid) of every test op an executor started."""
        if not self.starts_log.exists():
            return []
        rows = [line.split() for line in self.starts_log.read_text().splitlines()]
        return [(float(t), vid, int(pid)) for t, vid, pid in rows]

    def records(self, run_id: str) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for payload in self.client.hvals(self.keys.records(run_id)):
            record = msgpack.unpackb(payload)
            out.setdefault(record["vector"], []).append(record)
        return out

    def finals(self, run_id: str) -> dict[str, str]:
        return {k.decode(): parse_final(v)[0] for k, v in self.client.hgetall(self.keys.final(run_id)).items()}

    def wait(self, done, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return
            time.sleep(0.1)
        logs = "".join(p.read_text()[-1500:] for p in self.tmp.glob("*.log"))
        pytest.fail(f"{what}\n{logs}")

    def resets(self) -> list[str]:
        return self.reset_log.read_text().split() if self.reset_log.exists() else []

    def stop(self) -> None:
        stop_processes(*self.procs)


@pytest.fixture
def cluster(redis_server, tmp_path):
    found = Cluster(redis_server, tmp_path)
    yield found
    found.stop()


SHARED = "w-shared"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One worker (SHARED) on its own redis-server for the tests that leave it running and GOOD, so
    its start and stop are paid once: each test counts only what it caused (its own run ids, the
    resets since it began). The executors it started are all gone once it stopped."""
    tmp = tmp_path_factory.mktemp("shared")
    with running_redis(tmp) as url:
        found = Cluster(url, tmp)
        found.worker(SHARED, SWEEPCTL_CACHE_DIR=str(tmp / ".sweepctl-cache"))  # not the developer's cache
        yield found
        found.stop()
    assert executors_of(*found.procs) == []


def test_hangs_are_killed_reset_and_the_next_vector_runs_clean(shared):
    cluster, [worker] = shared, shared.procs
    before, resets = executors_of(worker), len(shared.resets())
    vectors = [
        vector("noop", 0),
        vector("hang", 1),
        vector("noop", 2),
        vector("hang_ignore_sigterm", 3),
        vector("noop", 4),
    ]
    cluster.enqueue("hang", vectors)
    cluster.wait(lambda: len(cluster.finals("hang")) == 5, 120, "the hang run did not finish")
    finals = cluster.finals("hang")
    assert [finals[v["id"]] for v in vectors] == [status.PASS, status.HANG, status.PASS, status.HANG, status.PASS]
    records = cluster.records("hang")
    assert all(len(r) == 1 for r in records.values())  # one record per attempt, one attempt each
    assert "no result after 3 s" in records[vectors[1]["id"]][0]["message"]
    assert cluster.resets()[resets:] == [SHARED, SHARED]  # the machine's reset ran after each hang
    assert cluster.health(SHARED) == "GOOD"
    assert len(executors_of(worker)) == len(before)  # killed groups leave no orphan, SIGTERM ignored or not


def test_a_poison_vector_crashes_twice_ends_crash_and_the_executor_respawns(shared):
    cluster, resets = shared, len(shared.resets())
    vectors = [vector("segv", 0), vector("noop", 1), vector("exit", 2), vector("noop", 3)]
    cluster.enqueue("crash", vectors)
    cluster.wait(lambda: len(cluster.finals("crash")) == 4, 120, "the crash run did not finish")
    finals = cluster.finals("crash")
    assert [finals[v["id"]] for v in vectors] == [status.CRASH, status.PASS, status.CRASH, status.PASS]
    records = {vid: sorted(r, key=lambda x: x["attempt"]) for vid, r in cluster.records("crash").items()}
    for poison, how in ((vectors[0], "SIGSEGV"), (vectors[2], "exited with code 3")):
        # one record per attempt: crashed, retried once on a fresh executor, crashed again, not retried
        assert [(r["attempt"], r["status"]) for r in records[poison["id"]]] == [(1, status.CRASH), (2, status.CRASH)]
        assert all(how in r["message"] for r in records[poison["id"]])
    assert [len(records[v["id"]]) for v in (vectors[1], vectors[3])] == [1, 1]
    assert len(cluster.resets()) - resets == 4  # every crash: reset, respawn, health check


def test_a_death_or_hang_outside_the_op_is_error_or_infra_never_crash_or_hang(shared):
    """The test ops misbehave in sweepctl's host work (`stage: host`: a ttnn host call that SIGSEGVs
    building inputs, a golden that never returns) or moving tensors (`stage: device_io`)."""
    cluster, [worker] = shared, shared.procs
    before, resets, since = executors_of(worker), len(shared.resets()), time.time()
    vectors = [
        vector("segv", 0, stage="host"),
        vector("noop", 1),
        vector("hang", 2, stage="host"),
        vector("noop", 3),
        vector("exit", 4, stage="device_io"),
        vector("noop", 5),
    ]
    cluster.enqueue("outside", vectors)
    cluster.wait(lambda: len(cluster.finals("outside")) == 6, 120, "the outside-the-op run did not finish")
    finals = cluster.finals("outside")
    assert [finals[v["id"]] for v in vectors] == [status.ERROR, status.PASS, status.ERROR, status.PASS, status.INFRA,
                                                  status.PASS]  # fmt: skip
    records = {vid: sorted(r, key=lambda x: x["attempt"]) for vid, r in cluster.records("outside").items()}
    segv, hang, exit_ = (records[vectors[i]["id"]] for i in (0, 2, 4))
    assert [(r["attempt"], r["status"]) for r in segv] == [(1, status.ERROR)]  # not retried
    assert "killed by signal SIGSEGV while building inputs" in segv[0]["message"]
    assert "outside the op" in segv[0]["message"]
    assert [(r["attempt"], r["status"]) for r in hang] == [(1, status.ERROR)]
    assert hang[0]["message"].startswith("no result after 3 s, still building inputs")
    # the device's fault: retried once like a crash (here: no other worker), then final
    assert [(r["attempt"], r["status"]) for r in exit_] == [(1, status.INFRA), (2, status.INFRA)]
    assert all("exited with code 3 while moving tensors" in r["message"] for r in exit_)
    started = [vid for t, vid, _ in cluster.starts() if t >= since]  # the module's other tests run noops too
    assert [started.count(v["id"]) for v in vectors] == [1, 1, 1, 1, 2, 1]
    # the retry ran last: its recovery may still be under way when its final is written
    cluster.wait(lambda: cluster.health(SHARED) == "GOOD", 60, "the worker did not recover")
    assert len(cluster.resets()) - resets == 4  # every death and the hang: reset, respawn, health check
    assert len(executors_of(worker)) == len(before)


def test_exceptions_and_memory_exhaustion_are_op_failures_not_infra(shared):
    cluster, resets = shared, len(shared.resets())
    vectors = [vector("raise", 0), vector("oom", 1, timeout=60), vector("noop", 2)]
    cluster.enqueue("raise", vectors)
    cluster.wait(lambda: len(cluster.finals("raise")) == 3, 120, "the raise run did not finish")
    finals = cluster.finals("raise")
    assert [finals[v["id"]] for v in vectors] == [status.FAIL_OP, status.FAIL_OP, status.PASS]
    assert len(cluster.resets()) == resets  # an op's own failure is not a device fault


def test_a_failed_reset_quarantines_the_worker_and_gives_its_chunk_back(cluster):
    cluster.worker("w-bad", reset="false")
    vectors = [vector("hang", 0), vector("noop", 1), vector("noop", 2)]
    cluster.enqueue("quarantine", vectors)
    cluster.wait(lambda: cluster.health("w-bad") == "BAD", 60, "the worker was not quarantined")
    cluster.worker("w-good")
    cluster.wait(lambda: len(cluster.finals("quarantine")) == 3, 60, "the chunk was not run elsewhere")
    records = {vid: r for vid, r in cluster.records("quarantine").items()}
    assert [(r["status"], r["worker"]) for r in records[vectors[0]["id"]]] == [(status.HANG, "w-bad")]
    for v in vectors[1:]:
        assert [(r["status"], r["worker"]) for r in records[v["id"]]] == [(status.PASS, "w-good")]
    listed = subprocess.run(
        [sys.executable, "-m", "broker.cli", "workers", "--json", "--redis", cluster.url, "--prefix", PREFIX],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    health = {w["name"]: w["health"] for w in json.loads(listed.stdout)}
    assert health == {"w-bad": "BAD", "w-good": "GOOD"}
    assert "exited 1" in cluster.client.hget(cluster.keys.worker("w-bad"), "health_reason").decode()


def test_cancel_before_and_while_running(shared):
    cluster = shared
    vectors = [vector("sleep", 0, timeout=60, seconds=30), vector("noop", 1), vector("noop", 2)]
    cluster.enqueue("cancel", vectors)
    running = cluster.keys.lease("cancel", vectors[0]["id"])
    cluster.wait(lambda: cluster.client.exists(running), 30, "the long vector did not start")
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "broker.cli", "cancel", "cancel", "--json", "--redis", cluster.url, "--prefix", PREFIX],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    assert json.loads(out.stdout)["running"] >= 1
    cluster.wait(lambda: len(cluster.finals("cancel")) == 3, 30, "the canceled run did not settle")
    assert time.monotonic() - started < 20  # the 30 s vector was killed, not waited for
    records = {vid: r[0] for vid, r in cluster.records("cancel").items()}
    assert records[vectors[0]["id"]]["status"] == status.CANCELED and records[vectors[0]["id"]]["attempt"] == 1
    assert "killed while running" in records[vectors[0]["id"]]["message"]
    # the next vector waited in the executor's pipe (started, never ran): its worker booked it;
    # the last was still in the chunk: `sweepctl cancel` booked it, attempt 0
    assert (records[vectors[1]["id"]]["status"], records[vectors[1]["id"]]["worker"]) == (status.CANCELED, SHARED)
    assert (records[vectors[2]["id"]]["status"], records[vectors[2]["id"]]["attempt"]) == (status.CANCELED, 0)


def test_an_expired_run_never_runs(cluster):
    vectors = [vector("noop", 0), vector("noop", 1)]
    cluster.enqueue("expired", vectors, expires=0.2)
    time.sleep(0.5)
    cluster.worker("w-late")
    cluster.wait(lambda: len(cluster.finals("expired")) == 2, 60, "the expired run did not settle")
    assert set(cluster.finals("expired").values()) == {status.EXPIRED}


def _worker_env(visibility: int) -> dict[str, str]:
    return {"SWEEPCTL_VISIBILITY_TIMEOUT": str(visibility), "SWEEPCTL_LEASE_TTL": "2"}


def test_sigkill_of_a_worker_mid_vector_redelivers_and_books_the_lost_attempt(cluster):
    worker = cluster.worker("w-doomed", **_worker_env(4))
    vectors = [vector("sleep", 0, timeout=30, seconds=3), vector("noop", 1)]
    cluster.enqueue("killed", vectors)
    lease = cluster.keys.lease("killed", vectors[0]["id"])
    cluster.wait(lambda: cluster.client.exists(lease), 30, "the vector did not start")
    os.killpg(worker.pid, signal.SIGKILL)  # the Celery worker dies; its message stays unacked
    cluster.worker("w-heir", **_worker_env(4))
    cluster.wait(lambda: len(cluster.finals("killed")) == 2, 90, "the killed worker's chunk was not redelivered")
    records = sorted(cluster.records("killed")[vectors[0]["id"]], key=lambda r: r["attempt"])
    assert [(r["attempt"], r["status"], r["worker"]) for r in records] == [
        (1, status.INFRA, "w-heir"),  # booked by the heir: no record and no lease for attempt 1
        (2, status.PASS, "w-heir"),
    ]
    assert "its worker died" in records[0]["message"]
    assert set(cluster.finals("killed").values()) == {status.PASS}


def test_a_vector_outliving_the_visibility_timeout_never_runs_twice(cluster):
    cluster.workers("w-slow", "w-idle", **_worker_env(2))
    slow = vector("sleep", 0, timeout=60, seconds=14)  # outlives the visibility timeout and a restore cycle
    cluster.enqueue("visibility", [slow])
    cluster.wait(lambda: len(cluster.finals("visibility")) == 1, 90, "the slow vector did not finish")
    records = cluster.records("visibility")[slow["id"]]
    assert [(r["attempt"], r["status"]) for r in records] == [(1, status.PASS)]
    # the chunk was redelivered while it ran; the copy found the live lease and skipped the vector

    def copy_skipped() -> bool:
        lines = [line for p in cluster.tmp.glob("w-*.log") for line in p.read_text().splitlines()]
        done = [json.loads(line) for line in lines if '"chunk_done"' in line]
        return any(d["skipped"] == 1 and d["ran"] == 0 for d in done)

    cluster.wait(copy_skipped, 15, "the chunk was not redelivered, or its copy did not skip the vector")
    assert len(cluster.records("visibility")[slow["id"]]) == 1
    assert cluster.client.hget(cluster.keys.attempts("visibility"), slow["id"]) == b"1"


def test_redis_stopped_and_restarted_mid_run_loses_and_duplicates_nothing(tmp_path):

    from broker.embedded import free_port

    port, data = free_port(), tmp_path / "redis"
    data.mkdir()

    def start_redis() -> subprocess.Popen:
        proc = redis_process(data, port, "--appendonly", "yes", "--appendfsync", "always", "--save", "")
        wait_for_redis(f"redis://127.0.0.1:{port}/0")
        return proc

    server = start_redis()
    cluster = Cluster(f"redis://127.0.0.1:{port}/0", tmp_path)
    try:
        cluster.worker("w-steady")
        vectors = [vector("sleep", i, timeout=30, seconds=0.1) for i in range(60)]
        cluster.enqueue("restart", vectors)  # 60 one-vector chunks: most wait in the queue
        cluster.wait(lambda: len(cluster.finals("restart")) >= 10, 60, "the run did not start")
        server.terminate()  # a clean stop: the AOF holds the queue and the records
        server.wait(timeout=30)
        time.sleep(5)
        server = start_redis()
        cluster.client = redis.Redis(port=port)
        cluster.wait(lambda: len(cluster.finals("restart")) == 60, 180, "the run did not finish after the restart")
        records = cluster.records("restart")
        assert sorted(records) == sorted(v["id"] for v in vectors)
        assert all([r["status"] for r in rs] == [status.PASS] for rs in records.values())  # none duplicated
        assert cluster.client.hvals(cluster.keys.attempts("restart")) == [b"1"] * 60
        assert list(cluster.client.scan_iter(cluster.keys.lease("restart", "*"))) == []  # none stuck RUNNING
    finally:
        cluster.stop()
        server.terminate()
        server.wait(timeout=30)


def test_warm_shutdown_finishes_the_running_vector_and_gives_the_rest_back(cluster):
    worker = cluster.worker("w-warm")
    vectors = [vector("sleep", 0, timeout=30, seconds=3), vector("noop", 1), vector("noop", 2)]
    cluster.enqueue("warm", vectors)
    lease = cluster.keys.lease("warm", vectors[0]["id"])
    cluster.wait(lambda: cluster.client.exists(lease), 30, "the vector did not start")
    os.killpg(worker.pid, signal.SIGTERM)  # warm: the running vector finishes
    worker.wait(timeout=60)
    finals = cluster.finals("warm")
    assert finals.get(vectors[0]["id"]) == status.PASS
    cluster.worker("w-next")
    cluster.wait(lambda: len(cluster.finals("warm")) == 3, 60, "the given-back vectors did not run")
    records = cluster.records("warm")
    assert [(r["worker"], r["status"]) for r in records[vectors[0]["id"]]] == [("w-warm", status.PASS)]
    assert all(len(records[v["id"]]) == 1 for v in vectors)  # nothing ran twice, nothing lost


def test_cold_shutdown_redelivers_and_leaves_no_orphan_executor(cluster):
    worker = cluster.worker("w-cold", **_worker_env(4))
    vectors = [vector("hang", 0, timeout=4), vector("noop", 1)]  # attempt 2 hangs this long: keep it short
    cluster.enqueue("cold", vectors)
    lease = cluster.keys.lease("cold", vectors[0]["id"])
    cluster.wait(lambda: cluster.client.exists(lease), 30, "the vector did not start")
    os.killpg(worker.pid, signal.SIGQUIT)  # cold: the worker goes now; the hung executor must follow
    worker.wait(timeout=30)
    cluster.wait(lambda: executors_of(worker) == [], 10, "the hung executor outlived its worker")
    cluster.worker("w-after", **_worker_env(4))
    cluster.wait(lambda: len(cluster.finals("cold")) == 2, 90, "the chunk was not redelivered")
    hung = sorted(cluster.records("cold")[vectors[0]["id"]], key=lambda r: r["attempt"])
    assert [(r["attempt"], r["status"]) for r in hung] == [(1, status.INFRA), (2, status.HANG)]


def test_a_pickled_message_is_refused_and_the_worker_keeps_working(cluster):
    from celery import Celery

    worker = cluster.worker("w-strict")
    hostile = Celery("hostile", broker=cluster.url, set_as_current=False)
    hostile.conf.update(
        task_serializer="pickle",
        accept_content=["pickle"],
        broker_transport_options={"global_keyprefix": cluster.keys.celery_prefix},
    )
    hostile.send_task("sweepctl.run_chunk", kwargs={"run_id": "x", "machine": "n300", "ids": []}, queue="sweeps.n300")
    log = cluster.tmp / "w-strict.log"
    cluster.wait(lambda: "disallowed" in log.read_text().lower(), 30, "the pickled message was not refused")
    vectors = [vector("noop", 0)]
    cluster.enqueue("after-pickle", vectors)
    cluster.wait(lambda: len(cluster.finals("after-pickle")) == 1, 60, "the worker stopped working")
    assert worker.poll() is None


def test_retry_gives_chosen_statuses_a_new_attempt_and_keeps_the_old_records(shared):
    cluster = shared
    vectors = [vector("hang", 0, timeout=2), vector("raise", 1), vector("noop", 2)]
    cluster.enqueue("retry", vectors)
    cluster.wait(lambda: len(cluster.finals("retry")) == 3, 60, "the first attempt did not finish")
    cli = [sys.executable, "-m", "broker.cli", "retry", "retry", "--status", "HANG", "--json"]
    out = subprocess.run(cli + ["--redis", cluster.url, "--prefix", PREFIX], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["retried"] == 1
    hang = vectors[0]["id"]
    cluster.wait(lambda: cluster.client.hlen(cluster.keys.records("retry")) == 4, 60, "the retry did not run")
    cluster.wait(lambda: len(cluster.finals("retry")) == 3, 30, "the retried vector has no final status")
    attempts = sorted((r["attempt"], r["status"]) for r in cluster.records("retry")[hang])
    assert attempts == [(1, status.HANG), (2, status.HANG)]  # the old record kept, a new attempt added
    status_cli = [sys.executable, "-m", "broker.cli", "status", "retry", "--json"]
    listed = subprocess.run(status_cli + ["--redis", cluster.url, "--prefix", PREFIX], capture_output=True, text=True,
                            cwd=ROOT, check=True)  # fmt: skip
    counts = json.loads(listed.stdout)["counts"]
    assert counts == {status.HANG: 1, status.FAIL_OP: 1, status.PASS: 1}  # counted once, not twice
    bad = subprocess.run(cli[:-2] + ["INVALID", "--redis", cluster.url, "--prefix", PREFIX], capture_output=True,
                         text=True, cwd=ROOT)  # fmt: skip
    assert bad.returncode == 2 and "never reach a device" in bad.stderr


def test_a_released_worker_checks_its_devices_and_consumes_again(cluster):
    fixed = cluster.tmp / "fixed"
    cluster.worker("w-flaky", reset=f"test -f {fixed}")  # the reset fails until a person fixes the box
    cluster.enqueue("flaky", [vector("hang", 0, timeout=2)])
    cluster.wait(lambda: cluster.health("w-flaky") == "BAD", 60, "the worker was not quarantined")
    fixed.touch()
    cli = [sys.executable, "-m", "broker.cli", "workers", "--release", "w-flaky", "--redis", cluster.url]
    assert subprocess.run(cli + ["--prefix", PREFIX], capture_output=True, cwd=ROOT).returncode == 0
    cluster.wait(lambda: cluster.health("w-flaky") == "GOOD", 30, "the released worker did not recover")
    cluster.enqueue("after-release", [vector("noop", 1)])
    cluster.wait(lambda: len(cluster.finals("after-release")) == 1, 30, "the released worker does not consume")
    assert [r[0]["worker"] for r in cluster.records("after-release").values()] == ["w-flaky"]
