"""Shared fixtures: the real traced data in tests/data (see its PROVENANCE.md) and small helpers."""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import subprocess

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
ADD_SWEEP = DATA / "ttnn_master_add_sweep_head.json"
DEEPSEEK = DATA / "ttnn_master_deepseek_v3_galaxy.json"
MINI = DATA / "ttnn_operations_master_mini.json"
TRACER_EXAMPLES = DATA / "operation_tracer_examples"
GALAXY_TRACE = DATA / "galaxy_trace"  # hand-built in the shape tt-metal's tracer writes (PROVENANCE.md)
SAMPLE = ROOT / "sweeps" / "data" / "sample_master.json"
REGISTERED_OPS = DATA / "ttnn_0.81.1_registered_operations.tsv"


@pytest.fixture
def add_sweep() -> dict:
    with open(ADD_SWEEP, encoding="utf-8") as handle:
        return json.load(handle)


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def deepcopy(data):
    return copy.deepcopy(data)


@pytest.fixture(autouse=True)
def _no_user_store(monkeypatch, tmp_path):
    """Commands under test never touch a store in the developer's working directory, nor their cache."""
    monkeypatch.delenv("SWEEPCTL_STORE", raising=False)
    monkeypatch.setenv("SWEEPCTL_CACHE_DIR", str(tmp_path / ".sweepctl-cache"))
    monkeypatch.chdir(tmp_path)
    os.environ.setdefault("PYTHONHASHSEED", "0")


def wait_for_redis(url: str, timeout: float = 10.0) -> None:
    """Until a redis-server just started answers PING (fails the test if it never does)."""
    import time

    import redis

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server at {url} did not start")
            time.sleep(0.02)


@contextlib.contextmanager
def running_redis(directory: Path) -> Iterator[str]:
    """A real redis-server on a free loopback port (never 6379), with its own data dir."""
    import shutil
    import subprocess

    from broker.embedded import free_port

    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory),
         "--save", "", "--appendonly", "no", "--daemonize", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_redis(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path_factory):
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@contextlib.contextmanager
def emulated_worker(url: str, prefix: str, name: str, log_dir: Path, **env: str) -> Iterator[subprocess.Popen]:
    """A real `sweepctl worker` (emulated n300, test ops on, 0.5 s heartbeat) on `url` under `prefix`,
    logging to log_dir/worker.log; yields its process, whose group gets SIGTERM on exit."""
    import signal
    import subprocess
    import sys

    env = {**os.environ, "SWEEPCTL_ENABLE_TEST_OPS": "1", "SWEEPCTL_HEARTBEAT": "0.5", **env}
    log = open(log_dir / "worker.log", "wb")  # noqa: SIM115 - the worker's for its lifetime
    cmd = [sys.executable, "-m", "broker.cli", "worker", "--machine", "n300", "--backend", "emulated",
           "--name", name, "--redis", url, "--prefix", prefix]  # fmt: skip
    worker = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        yield worker
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        log.close()


def cli(url: str, prefix: str, *args: str):
    """`sweepctl ARGS --redis URL --prefix PREFIX` in a fresh process, as a user runs it."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "broker.cli", *args, "--redis", url, "--prefix", prefix]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
