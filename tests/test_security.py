"""Security with real processes: Redis ACL users from deploy/users.acl enforce the roles, and a
pickled message is refused while the worker keeps working."""

from __future__ import annotations

import subprocess
import time

import pytest
import redis

from broker.app import make_app
from broker.coordinator import Plan, publish
from broker.embedded import free_port
from broker.keys import Keys
from broker.reports.summary import build
from broker.results import Results, make_record
from sweeps import status
from sweeps.suites import Expansion, Selection
from sweeps.vector import make_vector
from tests.conftest import ROOT, redis_process, running_redis, start_worker, stop_processes, stop_redis, wait_for_redis

ACL = ROOT / "deploy" / "users.acl"


@pytest.fixture
def acl_redis(tmp_path):
    port = free_port()
    url = lambda user: f"redis://{user}:change-me-{user}@127.0.0.1:{port}/0"  # noqa: E731
    with running_redis(tmp_path, "--aclfile", str(ACL), port=port, ping=url("coordinator")):
        yield url


def test_acl_roles_worker_cannot_delete_a_run_and_reporter_cannot_enqueue(acl_redis):
    keys = Keys()  # the default prefix, which the ACL file names
    coordinator = redis.Redis.from_url(acl_redis("coordinator"))
    vector = make_vector("ttnn.add", "s", "n300", [1, 2], [1], {}, 30.0)
    plan = Plan("acl-run", Selection(), Expansion.of([vector]), {})
    publish(make_app(acl_redis("coordinator"), keys), coordinator, keys, plan)  # the coordinator enqueues

    worker = redis.Redis.from_url(acl_redis("worker"))
    results = Results(worker, keys, worker="w1")
    claim = results.claim("acl-run", [vector["id"]])[0]  # the worker reads the run and writes records
    record = make_record(vector, "acl-run", claim.attempt, {"status": status.PASS, "pcc": 1.0}, backend="x")
    results.finish(record, lease=claim.lease)
    for key in (keys.run("acl-run"), keys.vectors("acl-run")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            worker.delete(key)
    assert coordinator.exists(keys.run("acl-run"))

    reporter = redis.Redis.from_url(acl_redis("reporter"))
    assert build(reporter, keys, "acl-run")["counts"] == {status.PASS: 1}  # it can read the report
    with pytest.raises(redis.exceptions.NoPermissionError):
        publish(
            make_app(acl_redis("reporter"), keys),
            reporter,
            keys,
            Plan("r2", Selection(), Expansion.of([vector]), {}),
        )
    assert not coordinator.exists(keys.run("r2"))
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(acl_redis("default").replace("change-me-default", "")).ping()


@pytest.mark.slow
def test_a_run_over_tls(tmp_path):
    import json
    import os
    import sys

    if subprocess.run(["openssl", "version"], capture_output=True).returncode != 0:
        pytest.skip("no openssl to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    server = redis_process(tmp_path, 0, "--tls-port", str(port), "--tls-cert-file", str(cert),
                           "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
                           "--save", "")  # fmt: skip
    url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"
    wait_for_redis(url)
    client = redis.Redis.from_url(url)
    env = {**os.environ, "SWEEPCTL_ENABLE_TEST_OPS": "1"}
    worker = start_worker(url, tmp_path / "worker.log", "--machine", "n300", "--name", "w-tls", env=env)
    try:
        keys = Keys()
        vector = make_vector("sweepctl.test.noop", "s", "n300", [1, 2], [0], {}, 30.0)
        publish(make_app(url, keys), client, keys, Plan("tls", Selection(), Expansion.of([vector]), {}))
        deadline = time.monotonic() + 120
        while client.hlen(keys.final("tls")) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        report = subprocess.run([sys.executable, "-m", "broker.cli", "report", "tls", "--json", "--redis", url],
                                capture_output=True, text=True, cwd=ROOT)  # fmt: skip
        assert json.loads(report.stdout)["counts"] == {status.PASS: 1}, (tmp_path / "worker.log").read_text()[-2000:]
    finally:
        stop_processes(worker)
        stop_redis(server)


def _keys_snapshot(client: redis.Redis, keys: Keys, run_id: str) -> dict[str, dict]:
    return {key: client.hgetall(key) for key in keys.run_keys(run_id)}


@pytest.mark.slow
def test_a_worker_under_the_acl_runs_a_whole_run_and_cannot_delete_or_rewrite_its_results(acl_redis, tmp_path):
    """A real worker with the `worker` user runs a run to the end; with the same user, deleting or
    rewriting the run's records, final, aggregates, failed and attempts hashes is refused, directly and
    from inside a script; every key is unchanged after."""
    import os

    keys = Keys()
    coordinator = redis.Redis.from_url(acl_redis("coordinator"))
    vectors = [make_vector("sweepctl.test.noop", "acl", "n300", [1, 2], [n], {}, 30.0) for n in range(3)]
    vectors += [make_vector("sweepctl.test.raise", "acl", "n300", [1, 2], [n], {}, 30.0) for n in range(2)]
    plan = Plan("acl-run", Selection(), Expansion.of(vectors), {})
    publish(make_app(acl_redis("coordinator"), keys), coordinator, keys, plan, chunk=2)
    env = {**os.environ, "SWEEPCTL_ENABLE_TEST_OPS": "1"}
    worker_proc = start_worker(acl_redis("worker"), tmp_path / "worker.log", "--machine", "n300", "--name", "w-acl",
                               env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while coordinator.hlen(keys.final("acl-run")) < 5 and time.monotonic() < deadline:
            assert worker_proc.poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
            time.sleep(0.2)
        text = (tmp_path / "worker.log").read_text()
        assert build(coordinator, keys, "acl-run")["counts"] == {status.PASS: 3, status.FAIL_OP: 2}, text[-2000:]
        assert "NOPERM" not in text and "permission" not in text.lower()
    finally:
        stop_processes(worker_proc)

    before = _keys_snapshot(coordinator, keys, "acl-run")
    assert all(before[k] for k in (keys.records("acl-run"), keys.final("acl-run"), keys.agg("acl-run"),
                                   keys.failed("acl-run"), keys.attempts("acl-run")))  # fmt: skip
    worker = redis.Redis.from_url(acl_redis("worker"))
    a_vector, a_record = next(iter(before[keys.records("acl-run")].items()))
    run_keys = keys.run_keys("acl-run")
    rewrite_once = {keys.run("acl-run"), keys.vectors("acl-run"), keys.records("acl-run"), keys.final("acl-run")}
    for key in run_keys:
        refused = [("delete", key), ("unlink", key), ("expire", key, 1), ("persist", key),
                   ("rename", key, keys.lease("acl-run", "stolen")), ("hdel", key, a_vector)]  # fmt: skip
        if key == keys.attempts("acl-run"):  # releasing an attempt that never ran deletes its counter
            refused.pop()
        if key in rewrite_once:
            refused += [("hset", key, a_vector, b"forged"), ("hincrby", key, "n", 1)]
        for command, *args in refused:
            with pytest.raises(redis.exceptions.NoPermissionError):
                getattr(worker, command)(*args)
        with pytest.raises(redis.exceptions.ResponseError):  # scripts run with the caller's ACL
            worker.eval("return redis.call('DEL', KEYS[1])", 1, key)
        if key in rewrite_once:
            with pytest.raises(redis.exceptions.ResponseError):
                worker.eval("return redis.call('HSET', KEYS[1], ARGV[1], 'forged')", 1, key, a_vector)
    with pytest.raises(redis.exceptions.ResponseError):  # the write script's coordinator-only op (retry's unfinal)
        Results(worker, keys, worker="w-acl").write("acl-run", [["u", vectors[3]["id"], status.FAIL_OP, "x", "n300",
                                                                 "1", "", "", "emulated", ""]])  # fmt: skip
    with pytest.raises(redis.exceptions.ResponseError):
        worker.flushall()
    assert worker.hsetnx(keys.records("acl-run"), a_vector, b"forged") == 0  # write-once: the record stays
    assert _keys_snapshot(coordinator, keys, "acl-run") == before
    assert a_record == before[keys.records("acl-run")][a_vector]


@pytest.mark.slow
def test_the_reporter_reports_through_the_cli_and_cannot_enqueue_or_cancel(acl_redis, capsys):
    import json

    from broker.cli import main

    keys = Keys()
    coordinator = redis.Redis.from_url(acl_redis("coordinator"))
    vector = make_vector("ttnn.add", "s", "n300", [1, 2], [1], {}, 30.0)
    plan = Plan("rep", Selection(), Expansion.of([vector]), {})
    publish(make_app(acl_redis("coordinator"), keys), coordinator, keys, plan)
    Results(coordinator, keys).finish(make_record(vector, "rep", 1, {"status": status.PASS, "pcc": 1.0}, backend="x"))
    coordinator.hset(keys.worker("w"), "health", "BAD")  # a quarantined worker to release
    before = _keys_snapshot(coordinator, keys, "rep")
    reporter = acl_redis("reporter")
    assert main(["report", "rep", "--json", "--redis", reporter]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {status.PASS: 1}
    assert main(["status", "rep", "--redis", reporter]) == 0 and "1/1" in capsys.readouterr().out
    sample = str(ROOT / "sweeps" / "data" / "sample_master.json")
    for argv in (
        ["enqueue", "--store", sample, "--run-id", "rep2"],
        ["cancel", "rep"],
        ["retry", "rep", "--status", "FAIL_OP"],
        ["workers", "--release", "w"],
    ):
        assert main([*argv, "--redis", reporter]) == 2, argv
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert len(err.splitlines()) == 1 and "refused by the ACL" in err and "Traceback" not in err, (argv, err)
    assert _keys_snapshot(coordinator, keys, "rep") == before
    assert coordinator.hgetall(keys.worker("w")) == {b"health": b"BAD"}
    assert not coordinator.exists(keys.run("rep2")) and coordinator.zcard(keys.runs()) == 1
