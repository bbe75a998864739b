"""Shared fixtures: the real traced data in tests/data (see its PROVENANCE.md) and small helpers."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

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


@pytest.fixture(autouse=True)
def _child_pytest_loads_no_plugins(monkeypatch):
    """A pytest a test starts (the tracer's runs, collection checks, repro files) loads only the
    plugins named on its command line: the model fixtures need none, and hypothesis's alone costs
    about a second per process on a loaded 2-core machine."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


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


def redis_process(directory: Path, port: int, *config: str, conf_file: Path | None = None) -> subprocess.Popen:
    """The one way tests start a redis-server: on 127.0.0.1:`port` (0: no plain TCP port, for TLS) with
    its data in `directory`; `config` goes on its command line after that (a config file first when
    given). The caller stops it (or kills it: the fault tests), and may start it again on the same
    port and data dir."""
    cmd = [shutil.which("redis-server"), *([str(conf_file)] if conf_file else []),
           "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory), *config]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_redis(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=10)


@contextlib.contextmanager
def running_redis(directory: Path, *config: str, port: int | None = None, ping: str | None = None) -> Iterator[str]:
    """A real redis-server on a free loopback port (never 6379), with its own data dir, no persistence
    unless `config` asks for it; yields its URL once `ping` (default: that URL) answers."""
    from broker.embedded import free_port

    port = free_port() if port is None else port
    proc = redis_process(directory, port, "--save", "", "--appendonly", "no", "--daemonize", "no", *config)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for_redis(ping or url)
        yield url
    finally:
        stop_redis(proc)


@pytest.fixture
def redis_server(tmp_path_factory):
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


WORKER_MARK = "SWEEPCTL_TEST_WORKER"  # in each test worker's environment: a value of its own


class Worker(subprocess.Popen):
    """A worker started by start_worker, with the `mark` its environment carries (WORKER_MARK) and
    every process it starts inherits: how a test finds its own executors among everyone's."""

    def __init__(self, cmd: list[str], mark: str, **kwargs) -> None:
        self.mark = mark
        super().__init__(cmd, **kwargs)


def start_worker(url: str, log: Path, *flags: str, env: dict[str, str] | None = None, append: bool = False) -> Worker:
    """The one way tests start a worker: a real `sweepctl worker --backend emulated FLAGS --redis URL`
    from the repository root, in its own process group (its executor gets the signals too), stdout
    and stderr to `log` (truncated unless `append`), marked for executors_of. Stop it with
    stop_processes."""
    cmd = [sys.executable, "-m", "broker.cli", "worker", "--backend", "emulated", *flags, "--redis", url]
    mark = uuid.uuid4().hex
    env = {**(os.environ if env is None else env), WORKER_MARK: mark}
    with open(log, "ab" if append else "wb") as out:
        return Worker(cmd, mark, cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True)


def executors_of(*workers: Worker) -> list[int]:
    """Pids of the live (not zombie) executor processes these workers started, found by the mark in
    their environment: a count of them ignores every other test run on the machine, and still sees
    an executor its worker left behind (an orphan keeps the environment it was started with)."""
    marks = {f"{WORKER_MARK}={worker.mark}".encode() for worker in workers}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):  # gone meanwhile, or someone else's process
            continue
        if b"workers.executor" in cmdline and state != "Z" and marks.intersection(environ):
            found.append(int(entry.name))
    return found


def stop_processes(*procs: subprocess.Popen, timeout: float = 60.0, force: bool = False) -> None:
    """SIGTERM the process group of each process started in its own session (a worker's: a warm
    shutdown) and wait for it; with `force`, SIGKILL what is left after `timeout`."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            if not force:
                raise
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def emulated_worker(
    url: str, prefix: str, name: str, log_dir: Path, machine: str = "n300", **env: str
) -> Iterator[subprocess.Popen]:
    """A real `sweepctl worker` (emulated, n300 unless `machine` says otherwise, test ops on, 0.5 s
    heartbeat) on `url` under `prefix`, logging to log_dir/worker.log; yields its Popen (its own
    process group); the group gets SIGTERM on exit unless the test killed it already."""
    env = {**os.environ, "SWEEPCTL_ENABLE_TEST_OPS": "1", "SWEEPCTL_HEARTBEAT": "0.5", **env}
    worker = start_worker(url, log_dir / "worker.log", "--machine", machine, "--name", name, "--prefix", prefix,
                          env=env)  # fmt: skip
    try:
        yield worker
    finally:
        stop_processes(worker)


def cli(url: str, prefix: str, *args: str):
    """`sweepctl ARGS --redis URL --prefix PREFIX` in a fresh process, as a user runs it."""
    cmd = [sys.executable, "-m", "broker.cli", *args, "--redis", url, "--prefix", prefix]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
