"""Fault injection, round 3 (audit): the promises of workers/daemon.py's docstring checked at the
timeouts a user runs with (30 s leases, 5 s heartbeats), real redis-server, real workers and
executors; the executors' start log (workers/testops.py) says what really started.

A worker frozen past its leases (SIGSTOP of its process group, as a VM pause or a debugger does),
then resumed: meanwhile the other worker of the machine queues the frozen worker's chunk again and
claims its vectors. Whatever the frozen worker held in memory (claimed vectors, a vector waiting in
its executor's pipe) must not start once the other worker took it over: every vector starts once
per attempt, under a lease its worker holds. And a vector whose worker died in it once runs again,
however many attempts it had before; a `sweepctl retry` cut short leaves nothing no one will run."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import pytest

from broker.app import make_app
from broker.embedded import free_port
from broker.lifecycle import retry
from sweeps import status
from tests.conftest import executors_of
from tests.test_faults import Cluster, vector
from tests.test_faults_round2 import busy, check_run, cli, log_events

pytestmark = pytest.mark.slow

FROZEN_FOR = 45.0  # s: past the 30 s lease, and the ~20 s after which the other worker queues the chunk again


@pytest.fixture
def cluster(redis_server, tmp_path):
    found = Cluster(redis_server, tmp_path)
    yield found
    found.stop()
    assert executors_of(*found.procs) == []


def started_after_takeover(cluster: Cluster, run_id: str, frozen_pid: int, heir: str) -> dict[str, float]:
    """Vectors the frozen worker's executor started after `heir` booked an attempt of theirs (the
    lost attempt the frozen worker held, or a later one): id -> how many seconds after."""
    taken: dict[str, float] = {}
    for vid, records in cluster.records(run_id).items():
        ends = [r["end"] for r in records if r["worker"] == heir]
        if ends:
            taken[vid] = min(ends)
    starts = cluster.starts()
    return {vid: when - taken[vid] for when, vid, pid in starts if pid == frozen_pid and when > taken.get(vid, when)}


def freeze(cluster: Cluster, procs: dict, run_id: str) -> tuple[str, str, float]:
    """SIGSTOP the worker running the chunk for FROZEN_FOR s, then SIGCONT it; (frozen, heir, when
    it was stopped)."""
    frozen = busy(cluster, procs)[0]
    heir = next(name for name in procs if name != frozen)
    os.killpg(procs[frozen].pid, signal.SIGSTOP)
    stopped = time.time()
    time.sleep(FROZEN_FOR)
    os.killpg(procs[frozen].pid, signal.SIGCONT)
    assert log_events(cluster, heir, "lost_worker_chunk_queued"), "the other worker did not queue the chunk again"
    return frozen, heir, stopped


def test_a_worker_frozen_past_its_leases_starts_none_of_the_vectors_it_had_claimed(cluster):
    """(a) fast vectors: the frozen worker holds a batch of claims (claimed ahead, not yet sent)."""
    procs = cluster.workers("w-a", "w-b", defaults=True)
    vectors = [vector("sleep", i, timeout=30, seconds=0.002) for i in range(1500)]
    ids = [v["id"] for v in vectors]
    cluster.enqueue("frozen", vectors)  # one message: one worker holds the whole chunk
    cluster.wait(lambda: len(cluster.finals("frozen")) >= 200, 60, "the chunk did not start")
    frozen, heir, stopped = freeze(cluster, procs, "frozen")
    cluster.wait(lambda: len(cluster.finals("frozen")) == len(ids), 90, "the run did not finish")
    cluster.wait(lambda: log_events(cluster, frozen, "chunk_done"), 60, "the resumed worker did not end its chunk")
    seen = check_run(cluster, "frozen", ids)
    assert started_after_takeover(cluster, "frozen", procs[frozen].pid, heir) == {}
    # what its executor had in its pipe ran in the first instants of the freeze (the executor is not stopped)
    ran = {vid for when, vid, pid in cluster.starts() if pid == procs[frozen].pid and when < stopped + 5}
    held = [vid for vid, n in seen["attempts"].items() if n > 1 and vid not in ran]
    assert held, "the freeze caught the worker holding no claim it had not sent yet"
    assert {seen["started"][vid] for vid in held} == {1}  # claimed by the frozen worker, run once by the heir
    print(
        f"\nfrozen {FROZEN_FOR:g} s holding {len(held)} claims not sent: none started after the takeover; "
        f"{len(log_events(cluster, frozen, 'claimed_leases_lost'))} renew found them lost"
    )


def test_a_worker_frozen_past_its_leases_starts_nothing_queued_in_its_executor(cluster):
    """(b) a slow vector runs in the executor (its own session: SIGSTOP of the worker's group does
    not stop it) with the next one waiting in its pipe; the slow one ends after the worker's start-by
    time (workers/stage.py), so the executor does not start the next one, which the other worker runs."""
    procs = cluster.workers("w-a", "w-b", defaults=True)
    slow, queued = vector("sleep", 0, timeout=120, seconds=35), vector("sleep", 1, timeout=30, seconds=1)
    ids = [slow["id"], queued["id"]]
    cluster.enqueue("piped", [slow, queued])
    cluster.wait(lambda: any(vid == slow["id"] for _, vid, _ in cluster.starts()), 60, "the slow vector did not start")
    lease = cluster.keys.lease("piped", queued["id"])
    cluster.wait(lambda: cluster.client.exists(lease), 10, "the next vector was not claimed")
    frozen, heir, _ = freeze(cluster, procs, "piped")
    cluster.wait(lambda: len(cluster.finals("piped")) == 2, 120, "the run did not finish")
    cluster.wait(lambda: log_events(cluster, frozen, "chunk_done"), 60, "the resumed worker did not end its chunk")
    seen = check_run(cluster, "piped", ids)
    assert started_after_takeover(cluster, "piped", procs[frozen].pid, heir) == {}
    assert seen["started"][queued["id"]] == 1  # by the other worker only
    assert log_events(cluster, frozen, "vector_not_started")  # the executor refused it past the start-by time


def test_a_retried_vector_whose_worker_dies_in_it_once_runs_again(cluster):
    """`sweepctl retry` gives a vector attempt 2; its worker is killed -9 while running it: the
    attempt is lost once, so the vector runs again (attempt 3), as a first attempt lost would."""
    procs = cluster.workers("w-a", "w-b", defaults=True)
    slow = vector("sleep", 0, timeout=60, seconds=8)
    cluster.enqueue("again", [slow])
    cluster.wait(lambda: len(cluster.finals("again")) == 1, 60, "the first attempt did not finish")
    out = cli(cluster, "retry", "again", "--status", "PASS", "--json")
    assert out.returncode == 0, out.stderr
    cluster.wait(lambda: len(cluster.starts()) == 2, 60, "the retry did not start")
    dead = busy(cluster, procs)[0]
    os.killpg(procs[dead].pid, signal.SIGKILL)
    procs[dead].wait(timeout=10)
    cluster.wait(lambda: len(cluster.finals("again")) == 1, 90, "the lost retry was not settled")
    seen = check_run(cluster, "again", [slow["id"]])
    rows = [(r["attempt"], r["status"]) for r in seen["records"][slow["id"]]]
    assert rows == [(1, status.PASS), (2, status.INFRA), (3, status.PASS)]
    assert seen["records"][slow["id"]][1]["message"] == "attempt 2: its worker died while running it"
    assert seen["finals"] == {slow["id"]: status.PASS} and seen["started"] == Counter({slow["id"]: 3})


def test_a_retry_cut_short_before_it_queued_its_vectors_is_finished_by_the_next(cluster):
    """The retry's publish fails (its broker connection refused: as a Ctrl-C or a dropped connection
    between taking the vectors out of their finals and queuing them); the user runs the retry again:
    it queues what the first left, and every vector runs its new attempt once."""
    cluster.worker("w-a", defaults=True)
    vectors = [vector("noop", i) for i in range(5)]
    ids = [v["id"] for v in vectors]
    cluster.enqueue("cut", vectors)
    cluster.wait(lambda: len(cluster.finals("cut")) == len(ids), 60, "the run did not finish")
    unreachable = make_app(f"redis://127.0.0.1:{free_port()}/0", cluster.keys)
    with pytest.raises(Exception, match="Connection refused"):
        retry(unreachable, cluster.client, cluster.keys, "cut", [status.PASS])
    assert cluster.finals("cut") == {}  # taken out of their finals, queued nowhere
    out = cli(cluster, "retry", "cut", "--status", status.PASS, "--json")  # what the user does next
    assert out.returncode == 0, out.stderr
    assert {k: v for k, v in json.loads(out.stdout).items() if k != "chunks"} == {
        "retried": 0, "requeued": len(ids), "per_machine": {"n300": len(ids)}
    }  # fmt: skip
    cluster.wait(lambda: len(cluster.finals("cut")) == len(ids), 60, "the vectors the cut retry left did not run")
    seen = check_run(cluster, "cut", ids)
    assert {vid: [(r["attempt"], r["status"]) for r in rs] for vid, rs in seen["records"].items()} == {
        vid: [(1, status.PASS), (2, status.PASS)] for vid in ids
    }
    assert seen["started"] == Counter({vid: 2 for vid in ids})
    assert not cluster.client.exists(cluster.keys.retrying("cut"))
