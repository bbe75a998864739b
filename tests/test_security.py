"""Security with real processes: Redis ACL users from deploy/users.acl enforce the roles, and a
pickled message is refused while the worker keeps working."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import redis

from broker.app import make_app
from broker.coordinator import Plan, publish
from broker.embedded import free_port
from broker.keys import Keys
from broker.report import build
from broker.results import Results, make_record
from sweeps import status
from sweeps.suites import Expansion, Selection
from sweeps.vector import make_vector
from tests.conftest import ROOT, wait_for_redis

ACL = ROOT / "deploy" / "users.acl"


@pytest.fixture
def acl_redis(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(tmp_path),
         "--save", "", "--appendonly", "no", "--aclfile", str(ACL)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = lambda user: f"redis://{user}:change-me-{user}@127.0.0.1:{port}/0"  # noqa: E731
    wait_for_redis(url("coordinator"))
    yield url
    proc.terminate()
    proc.wait(timeout=10)


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
    import signal
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
    server = subprocess.Popen(
        [shutil.which("redis-server"), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
         "--tls-auth-clients", "no", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={cert}"
    wait_for_redis(url)
    client = redis.Redis.from_url(url)
    env = {**os.environ, "SWEEPCTL_ENABLE_TEST_OPS": "1"}
    cmd = [sys.executable, "-m", "broker.cli", "worker", "--machine", "n300", "--backend", "emulated"]
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(cmd + ["--name", "w-tls", "--redis", url], cwd=ROOT, env=env, stdout=log, stderr=log,
                              start_new_session=True)  # fmt: skip
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
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        server.terminate()
        server.wait(timeout=10)
