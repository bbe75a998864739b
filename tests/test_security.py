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
from tests.conftest import ROOT

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
    for _ in range(200):
        try:
            redis.Redis.from_url(url("coordinator")).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_acl_roles_worker_cannot_delete_a_run_and_reporter_cannot_enqueue(acl_redis):
    keys = Keys()  # the default prefix, which the ACL file names
    coordinator = redis.Redis.from_url(acl_redis("coordinator"))
    vector = make_vector("ttnn.add", "s", "n300", [1, 2], [1], {}, 30.0)
    plan = Plan("acl-run", Selection(), Expansion(vectors=[vector]), {})
    publish(make_app(acl_redis("coordinator"), keys), coordinator, keys, plan)  # the coordinator enqueues

    worker = redis.Redis.from_url(acl_redis("worker"))
    results = Results(worker, keys, worker="w1")
    claim = results.claim("acl-run", [vector["id"]])[0]  # the worker reads the run and writes records
    results.start("acl-run", vector["id"], claim.attempt)
    results.finish(make_record(vector, "acl-run", claim.attempt, {"status": status.PASS, "pcc": 1.0}, backend="x"))
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
            Plan("r2", Selection(), Expansion(vectors=[vector]), {}),
        )
    assert not coordinator.exists(keys.run("r2"))
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(acl_redis("default").replace("change-me-default", "")).ping()
