"""Fleet tracing end to end: a real redis-server, real emulated workers of two machine types (their
mock clusters), the repo's host-only model fixtures as registered models: one passes, one fails, one
hangs past its entry's timeout. Only the passing model's configs reach the store, with one execution
per machine; running again adds nothing; the hang ends `timeout` and the worker healthy again; a
worker killed in a trace job has it run by another worker and recorded once."""

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
from broker.keys import Keys
from broker.traces import jobs as tracejobs
from tests.conftest import ROOT, cli, emulated_worker
from tracer.store import MasterStore

PREFIX = "fleet"
HANG_TIMEOUT = 3  # the hanging entry's own timeout (registry), not a shortened default
MARK = f"SWEEPCTL_FLEET_E2E_{os.getpid()}"  # in the env of the broken model's traced test: finds its processes


def write_registry(path: Path) -> Path:
    path.write_text(
        f"root: {ROOT}\n"
        "models:\n"
        "  - name: tiny/decode\n"
        "    test: tests/fixtures/model/test_tiny_model.py::test_decode_block\n"
        "    machines: [n300, galaxy]\n"
        "  - name: tiny/broken\n"
        "    test: tests/fixtures/model/test_tiny_model.py::test_broken_layer\n"
        f"    env: {{{MARK}: '1'}}\n"
        "    machines: [n300]\n"
        "  - name: tiny/hang\n"
        "    test: tests/fixtures/model/test_hanging_model.py::test_hangs_after_an_op\n"
        "    machines: [galaxy]\n"
        f"    timeout: {HANG_TIMEOUT}\n",
        encoding="utf-8",
    )
    return path


def _marked_processes() -> list[int]:
    """Pids whose environment holds MARK (the broken model's traced test, any attempt)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                if f"{MARK}=".encode() in handle.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:g} s")
        time.sleep(0.1)


@pytest.mark.slow
def test_trace_all_on_two_machine_types_merges_the_passing_model_once(redis_server, tmp_path):
    # every pytest here (the collection check, each traced test on the workers) loads no plugin: conftest
    models = write_registry(tmp_path / "models.yaml")
    store = tmp_path / "master.json"
    client, keys = redis.Redis.from_url(redis_server), Keys(PREFIX)
    logs = {m: tmp_path / m for m in ("n300-a", "n300-b", "galaxy")}
    for directory in logs.values():
        directory.mkdir()

    # bad input first, with no worker up: nothing queued, one line, exit 2
    unknown = cli(redis_server, PREFIX, "trace", "--model", "nope", "--models", str(models), "--store", str(store))
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "nope" in unknown.stderr
    idle = cli(redis_server, PREFIX, "trace", "--all", "--wait", "--no-check", "--models", str(models),
               "--store", str(store))  # fmt: skip
    assert idle.returncode == 2 and "no live worker" in idle.stderr and idle.stderr.count("\n") == 1
    assert client.zcard(keys.traces()) == 0 and not store.exists()

    lease = {"SWEEPCTL_LEASE_TTL": "2"}  # a killed worker's trace job is free again 2 s later
    with (
        emulated_worker(redis_server, PREFIX, "fleet-n300-a", logs["n300-a"], machine="n300", **lease) as n300_a,
        emulated_worker(redis_server, PREFIX, "fleet-n300-b", logs["n300-b"], machine="n300", **lease) as n300_b,
        emulated_worker(redis_server, PREFIX, "fleet-galaxy", logs["galaxy"], machine="galaxy", **lease),
    ):
        health = lambda name: client.hget(keys.worker(name), "health")  # noqa: E731
        names = ("fleet-n300-a", "fleet-n300-b", "fleet-galaxy")
        # registered is enough (a live worker takes its queue's jobs once its devices are open): the
        # trace command's collection check overlaps with the executors opening
        _wait_for(lambda: all(health(n) in (b"UNKNOWN", b"GOOD") for n in names), 60, "workers registered")
        started = time.monotonic()
        command = [sys.executable, "-m", "broker.cli", "trace", "--all", "--wait", "--models", str(models),
                   "--store", str(store), "--json", "--redis", redis_server, "--prefix", PREFIX]  # fmt: skip
        traced = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        # the worker running the broken model dies (kill -9) while its test runs: the job is queued again
        # once its lease lapses, the other n300 worker runs it, and it is recorded once
        def broken_running() -> dict | None:
            rows = [r for r in tracejobs.jobs(client, keys) if r.get("model") == "tiny/broken"]
            return rows[0] if rows and rows[0].get("state") == "running" else None

        _wait_for(lambda: broken_running() is not None, 120, "the broken model's job running")
        victim = {"fleet-n300-a": n300_a, "fleet-n300-b": n300_b}[broken_running()["worker"]]
        os.killpg(victim.pid, signal.SIGKILL)
        out, err = traced.communicate(timeout=240)
        seconds = time.monotonic() - started
        assert traced.returncode == 1, err[-3000:]  # not every job passed
        report = json.loads(out)
        outcomes = {(j["model"], j["machine"]): j["outcome"] for j in report["jobs"]}
        assert outcomes == {
            ("tiny/decode", "n300"): "passed",
            ("tiny/decode", "galaxy"): "passed",
            ("tiny/broken", "n300"): "failed",
            ("tiny/hang", "galaxy"): "timeout",
        }
        broken = next(j for j in report["jobs"] if j["model"] == "tiny/broken")
        assert client.hget(keys.trace(broken["uid"]), "attempts") == b"2"
        assert client.hget(keys.trace(broken["uid"]), "requeued") == b"1"
        assert broken["worker"] != next(n for n, p in (("fleet-n300-a", n300_a), ("fleet-n300-b", n300_b))
                                        if p is victim)  # fmt: skip
        assert _marked_processes() == []  # the killed worker's traced test died with it (its own session)
        print(f"\ntrace --all --wait to merged store: {seconds:.1f} s (from queueing: {report['seconds']} s); jobs: "
              + ", ".join(f"{j['model']}@{j['machine']} {j['duration_s']} s" for j in report["jobs"]))

        # exactly the passing model's configs, one execution per machine it was traced on
        merged = MasterStore.load(str(store))
        assert set(merged.ops) == {"ttnn.typecast", "ttnn.squeeze", "ttnn.unsqueeze"}
        assert report["new_configs"] == 3 and report["known_configs"] == 3
        for _, config in merged.entries():
            runs = config["executions"]
            assert sorted(r["machine_info"]["device_series"] for r in runs) == ["n300", "tt-galaxy-wh"]
            assert all(r["count"] == 3 and r["source"].endswith("::test_decode_block") for r in runs)
            assert len({r["trace_uid"] for r in runs}) == 2
        typecast = next(iter(merged.ops["ttnn.typecast"].values()))
        assert typecast["arguments"]["arg0"]["original_shape"] == [1, 1, 32, 64]  # not the failing test's 64x64

        # the hang: a timeout record, the worker reset, health-checked and taking work again
        hang = next(j for j in report["jobs"] if j["model"] == "tiny/hang")
        assert "process group was killed" in hang["message"] and hang["duration_s"] >= HANG_TIMEOUT
        _wait_for(lambda: health("fleet-galaxy") == b"GOOD", 60, "the galaxy worker healthy after the hang")
        assert client.hget(keys.worker("fleet-galaxy"), "health_reason") == b"reset and health check passed"

        # again: the same job redelivered is skipped by the worker, and a second pull adds nothing
        before = store.read_bytes()
        decode = next(j for j in report["jobs"] if j["model"] == "tiny/decode" and j["machine"] == "galaxy")
        job = msgpack.unpackb(client.hget(keys.trace(decode["uid"]), "job"), raw=False)
        tracejobs.send(make_app(redis_server, keys), tracejobs.Job(**job))
        _wait_for(lambda: client.hget(keys.trace(decode["uid"]), "redelivered") == b"1", 30, "the redelivery seen")
        assert client.hget(keys.trace(decode["uid"]), "attempts") == b"1"
        again = cli(redis_server, PREFIX, "store", "pull", str(store), "--json")
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["already_merged"] == 4 and json.loads(again.stdout)["traces"] == []
        assert store.read_bytes() == before

        status = cli(redis_server, PREFIX, "models", "status", "--models", str(models), "--store", str(store))
        assert status.returncode == 0, status.stderr
        print(status.stdout)
        lines = {tuple(line.split()[:3]): line for line in status.stdout.splitlines()[1:]}
        assert "passed" in lines[("tiny/decode", "n300", "passed")]
        assert ("tiny/hang", "galaxy", "timeout") in lines and ("tiny/broken", "n300", "failed") in lines
