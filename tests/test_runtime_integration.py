"""The runtime end to end: a real redis-server, two real worker processes (n300 and galaxy,
emulated backend), the real `sweepctl` commands, on the sample store shipped in the project."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import msgpack
import pytest
import redis

from broker.keys import Keys
from broker.results import parse_final
from sweeps import status
from tests.conftest import ROOT, start_worker, stop_processes

SAMPLE = str(ROOT / "sweeps" / "data" / "sample_master.json")
PREFIX = "itest"


def sweepctl(*args: str, url: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", *args, "--redis", url, "--prefix", PREFIX],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


@pytest.fixture
def two_workers(redis_server, tmp_path):
    procs = [
        start_worker(redis_server, tmp_path / f"{m}.log", "--machine", m, "--name", f"it-{m}", "--prefix", PREFIX)
        for m in ("n300", "galaxy")
    ]
    client = redis.Redis.from_url(redis_server)
    keys = Keys(PREFIX)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if all(client.hget(keys.worker(f"it-{m}"), "health") == b"GOOD" for m in ("n300", "galaxy")):
            break
        time.sleep(0.2)
    else:
        pytest.fail("workers did not open their executors: " + (tmp_path / "n300.log").read_text()[-2000:])
    yield client, keys
    stop_processes(*procs)


@pytest.mark.slow
def test_a_run_on_two_machine_types_reaches_a_final_status_for_every_vector(redis_server, two_workers):
    client, keys = two_workers
    enq = sweepctl("enqueue", "--store", SAMPLE, "--json", url=redis_server)
    assert enq.returncode == 0, enq.stderr
    summary = json.loads(enq.stdout)
    run_id = summary["run_id"]
    assert summary["added"] == 33 and set(summary["queued"]) == {"n300", "galaxy"}

    watch = sweepctl("watch", run_id, "--timeout", "240", url=redis_server)
    assert watch.returncode == 0, watch.stderr[-2000:]

    vectors = {k.decode(): msgpack.unpackb(v) for k, v in client.hgetall(keys.vectors(run_id)).items()}
    finals = {k.decode(): parse_final(v)[0] for k, v in client.hgetall(keys.final(run_id)).items()}
    records = [msgpack.unpackb(v) for v in client.hgetall(keys.records(run_id)).values()]
    assert set(finals) == set(vectors) and len(vectors) == 33
    # one record per vector: each ran once (attempt 1) or was decided by the coordinator (attempt 0)
    assert sorted(r["vector"] for r in records) == sorted(vectors)
    by_vector = {r["vector"]: r for r in records}
    for vid, record in by_vector.items():
        assert record["status"] == finals[vid]
    invalid = [r for r in records if r["status"] == status.INVALID]
    assert [r["op"] for r in invalid] == ["ttnn.add"] and "outside the n300 compute grid" in invalid[0]["message"]
    for record in invalid + [r for r in records if r["status"] == status.NOT_RUN]:
        # never reached an executor: decided at enqueue, no attempt was ever started
        assert record["attempt"] == 0 and record["backend"] == "coordinator"
        assert client.hget(keys.attempts(run_id), record["vector"]) is None
    assert [r for r in records if r["status"] == status.NOT_RUN] == []  # every sample op has a definition
    executed = [r for r in records if status.is_executed(r["status"])]
    assert len(executed) == 32 and {r["backend"] for r in executed} == {"emulated"}
    assert {r["worker"] for r in executed} == {"it-n300", "it-galaxy"}
    assert all(r["worker"] == f"it-{r['machine']}" for r in executed)

    # block-float weights cost accuracy: bfloat4_b matmul below its bfloat8_b twin, and judged by its own bar
    matmuls = {vectors[r["vector"]]["inputs"][1]["tensor"]["dtype"]: r for r in executed if r["op"] == "ttnn.matmul"}
    assert matmuls["BFLOAT4_B"]["pcc"] < matmuls["BFLOAT8_B"]["pcc"] < 1.0
    assert matmuls["BFLOAT4_B"]["threshold"] < matmuls["BFLOAT8_B"]["threshold"]
    for dtype, record in matmuls.items():  # the record names the tensor whose dtype set the bar
        assert record["threshold_dtype"] == f"input 1 {dtype}"

    report = sweepctl("report", run_id, "--json", url=redis_server)
    data = json.loads(report.stdout)
    assert data["complete"] and data["executed"] == 32 and data["backends"] == {"emulated": 32}
    assert report.returncode == (1 if data["failed"] else 0)
    text = sweepctl("report", run_id, url=redis_server).stdout
    assert "backend=emulated" in text and "ttnn.matmul" in text

    # the same run id again adds nothing
    again = sweepctl("enqueue", "--store", SAMPLE, "--run-id", run_id, "--json", url=redis_server)
    assert json.loads(again.stdout)["added"] == 0 and client.hlen(keys.records(run_id)) == 33
