"""`sweepctl enqueue` under faults and bad input, as a user runs it: killed mid-upload, Redis lost
mid-upload, empty selections, bad chunk sizes, malformed Redis URLs, all_cases dry runs above the
cap, stdout that stays JSON, machine types with no live worker, expiry with no worker, and
`--reuse` of another run's passes."""

from __future__ import annotations

import argparse
import base64
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

from broker.cli import main
from broker.coordinator import LOCK_TTL, EnqueueLock, plan, publish
from broker.embedded import free_port
from broker.keys import Keys
from broker.reports.summary import progress
from broker.results import parse_final
from sweeps import status
from sweeps.suites import Selection, all_cases, count_all_cases
from tests.conftest import ROOT, redis_process, running_redis, start_worker, stop_processes, wait_for_redis
from tests.synth import _MACHINE, scalar_store, tensor
from tracer.confighash import config_hash
from tracer.errors import InputError

SAMPLE = str(ROOT / "sweeps" / "data" / "sample_master.json")
BIG = 20_000  # vectors: ~6 MB of payloads, more than a loopback socket buffers, so a kill lands mid-upload


def sweepctl(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def _one_line(result: subprocess.CompletedProcess, needle: str) -> str:
    err = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, err
    assert result.stdout == ""
    return err


def _queued_ids(client: redis.Redis, keys: Keys, run_id: str | None = None) -> list[str]:
    """The vector ids in every chunk message (of one run) waiting in this prefix's machine queues."""
    ids = []
    for queue in client.keys(keys.celery_prefix + "sweeps.*"):
        for raw in client.lrange(queue, 0, -1):
            chunk = msgpack.unpackb(base64.b64decode(json.loads(raw)["body"]))[1]
            ids += chunk["ids"] if run_id in (None, chunk["run_id"]) else []
    return ids


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory):
    """One redis-server for the module's tests that enqueue the sample store: host validation runs
    a ttnn child once per machine type and Redis caches its verdicts, so they pay it once."""
    with running_redis(tmp_path_factory.mktemp("shared-redis")) as url:
        yield url


@pytest.fixture(scope="module")
def big_store(tmp_path_factory) -> tuple[str, dict[str, str]]:
    """A 20,000-config store and a cache dir its index is built into once for the module's tests."""
    root = tmp_path_factory.mktemp("big")
    path = root / "big.json"
    path.write_text(json.dumps(scalar_store(BIG)))
    return str(path), {"SWEEPCTL_CACHE_DIR": str(root / "cache")}


def _start_enqueue(store: str, url: str, env: dict[str, str], run_id: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "broker.cli", "enqueue", "--store", store, "--run-id", run_id, "--json"]
    return subprocess.Popen(
        [*cmd, "--redis", url], cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _wait_for_upload(client: redis.Redis, keys: Keys, run_id: str, proc: subprocess.Popen) -> None:
    """Until the first batch of the run's vectors is stored (the upload has begun)."""
    deadline = time.monotonic() + 240
    while not client.exists(keys.vectors(run_id)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the enqueue never began its upload"
        time.sleep(0.001)


def _settled_hlen(client: redis.Redis, key: str) -> int:
    """A hash's length once Redis has applied what a killed client had already sent."""
    last = -1
    while (now := client.hlen(key)) != last:
        last = now
        time.sleep(0.3)
    return now


def _assert_healed(client: redis.Redis, keys: Keys, run_id: str) -> None:
    """The run holds every vector once; its total is what it stores; each stored vector is final or
    queued exactly once."""
    stored = {i.decode() for i in client.hkeys(keys.vectors(run_id))}
    finals = {i.decode() for i in client.hkeys(keys.final(run_id))}
    assert len(stored) == BIG and progress(client, keys, run_id)["total"] == BIG
    per_machine = {k: int(v) for k, v in client.hgetall(keys.run(run_id)).items() if k.startswith(b"total|")}
    assert per_machine == {b"total|n300": BIG}
    queued = _queued_ids(client, keys)
    assert len(queued) == len(set(queued)) and set(queued) == stored - finals and queued


@pytest.mark.slow
def test_an_enqueue_killed_mid_upload_is_taken_over_at_once_and_finished(big_store, redis_server):
    """D6: the lock of a killed enqueue does not hold its run id for 600 s; the next enqueue takes
    it over, queues what the dead one stored, and the run's total is the vectors it stores."""
    store, env = big_store
    client, keys = redis.Redis.from_url(redis_server), Keys()
    proc = _start_enqueue(store, redis_server, env, "r1")
    _wait_for_upload(client, keys, "r1", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = _settled_hlen(client, keys.vectors("r1"))
    assert 0 < stored < BIG  # killed mid-upload
    assert json.loads(client.get(keys.enqueuing("r1")))["pid"] == proc.pid  # its lock outlived it
    state = json.loads(sweepctl("status", "r1", "--json", "--redis", redis_server, env=env).stdout)
    assert state["enqueue"] == "interrupted" and not state["complete"] and state["total"] == stored
    text = sweepctl("watch", "r1", "--timeout", "1", "--redis", redis_server, env=env)
    assert text.returncode == 1 and "`sweepctl enqueue --run-id r1` finishes it" in text.stderr

    started = time.monotonic()
    again = sweepctl("enqueue", "--store", store, "--run-id", "r1", "--json", "--redis", redis_server, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert time.monotonic() - started < 120  # not the old 600 s lock TTL
    summary = json.loads(again.stdout)
    assert summary["took_over_lock_of"]["pid"] == proc.pid and not client.exists(keys.enqueuing("r1"))
    assert summary["added"] == BIG - stored and summary["requeued"] == stored
    _assert_healed(client, keys, "r1")
    state = json.loads(sweepctl("status", "r1", "--json", "--redis", redis_server, env=env).stdout)
    assert state["enqueue"] is None and state["total"] == BIG and not state["complete"]


@pytest.mark.slow
def test_redis_lost_mid_enqueue_is_one_line_and_the_next_enqueue_finishes_it(big_store, tmp_path):
    store, env = big_store
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    config = ("--save", "", "--appendonly", "yes", "--appendfsync", "always")
    server = redis_process(tmp_path, port, *config)
    try:
        wait_for_redis(url)
        client, keys = redis.Redis.from_url(url), Keys()
        proc = _start_enqueue(store, url, env, "r2")
        _wait_for_upload(client, keys, "r2", proc)
        server.kill()
        server.wait()
        out, err = proc.communicate(timeout=120)
        _one_line(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), "connection lost")
        assert "enqueueing run r2" in err and "`sweepctl enqueue --run-id r2`" in err

        server = redis_process(tmp_path, port, *config)  # same port, same AOF
        wait_for_redis(url)
        assert 0 < _settled_hlen(client, keys.vectors("r2")) < BIG
        again = sweepctl("enqueue", "--store", store, "--run-id", "r2", "--json", "--redis", url, env=env)
        assert again.returncode == 0, again.stderr[-2000:]
        assert json.loads(again.stdout)["took_over_lock_of"]["pid"] == proc.pid
        _assert_healed(client, keys, "r2")
    finally:
        server.kill()
        server.wait()


def test_the_enqueue_lock_names_its_owner_and_only_a_gone_owner_loses_it(redis_server):
    client, key = redis.Redis.from_url(redis_server), "t:run:r:enqueuing"
    mine = EnqueueLock(client, key)
    mine.acquire("run r")
    try:
        owner = json.loads(client.get(key))
        assert owner["pid"] == os.getpid() and owner["host"] and owner["beat"]
        with pytest.raises(InputError, match=f"still writing it \\(pid {os.getpid()} on"):
            EnqueueLock(client, key).acquire("run r")  # a live owner keeps it
        client.pexpire(key, 4000)
        time.sleep(2.5)  # one heartbeat: the TTL is renewed
        assert client.pttl(key) > 4000 and json.loads(client.get(key))["beat"] > owner["beat"]
    finally:
        mine.release()
    assert not client.exists(key)
    # another host's enqueue: alive while its heartbeat renews the TTL, gone once it missed three
    other = json.dumps({"token": "x", "pid": 1, "host": "elsewhere", "started": 0, "beat": 0})
    client.set(key, other, ex=LOCK_TTL)
    with pytest.raises(InputError, match="pid 1 on elsewhere"):
        EnqueueLock(client, key).acquire("run r")
    client.set(key, other, px=5000)
    taker = EnqueueLock(client, key)
    taker.acquire("run r")
    assert taker.took_over["host"] == "elsewhere"
    taker.release()


def test_an_enqueue_that_died_after_storing_is_never_complete_until_finished(capsys, shared_redis):
    """D6: every stored vector final is not enough while an enqueue's PUBLISHING marker stands."""
    from broker.app import make_app
    from broker.results import Results, make_record

    client, keys = redis.Redis.from_url(shared_redis), Keys()
    the_plan = plan(SAMPLE, Selection(), client, keys, "mark")
    with pytest.raises(InputError):  # the broker is gone when the chunks are sent
        publish(make_app("redis://127.0.0.1:1/0", keys), client, keys, the_plan)
    results = Results(client, keys)
    for vid, payload in client.hgetall(keys.vectors("mark")).items():  # book the rest as a worker would
        if client.hexists(keys.final("mark"), vid):
            continue
        vector = msgpack.unpackb(payload)
        results.finish(make_record(vector, "mark", 1, {"status": status.PASS, "pcc": 1.0}, backend="emulated"))
    prog = progress(client, keys, "mark")
    assert prog["done"] == prog["total"] == 33 and prog["enqueue"] == "interrupted" and not prog["complete"]
    assert main(["enqueue", "--store", SAMPLE, "--run-id", "mark", "--redis", shared_redis]) == 0
    assert progress(client, keys, "mark")["complete"]


def test_an_empty_selection_is_an_error_and_makes_no_run(capsys, redis_server):
    """D7."""
    base = ["enqueue", "--store", SAMPLE, "--redis", redis_server, "--prefix", "empty"]
    for extra, needle in (
        (["-k", "nomatch"], "nothing to run: no config matches every op -k nomatch"),
        (["--op", ","], "--op: ',' names no op"),
        (["--model", "no-such-model"], "nothing to run: no config matches every op --model no-such-model"),
        (["--op", "add", "--model", "no-such-model", "--dry-run"], "no config matches --op ttnn.add --model"),
    ):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    client = redis.Redis.from_url(redis_server)
    assert client.zcard("empty:runs") == 0 and not client.keys("empty:run:*")


def test_chunk_must_be_between_1_and_its_limit(capsys, shared_redis):
    """D8."""
    base = ["enqueue", "--store", SAMPLE, "--redis", shared_redis, "--run-id", "chunk"]
    for bad in ("-5", "0", "4097"):
        assert main([*base, "--chunk", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"sweepctl: error: --chunk: {bad} vectors per message: give 1 to 4096"
    assert main([*base, "--max-vectors", "0"]) == 2 and "--max-vectors" in capsys.readouterr().err
    assert main([*base, "--expires", "-1"]) == 2 and "--expires" in capsys.readouterr().err
    assert not redis.Redis.from_url(shared_redis).exists("sweepctl:run:chunk")
    assert main([*base, "--chunk", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["chunks"] == 32  # one message per queued vector


BAD_URLS = (
    ("notaurl", "not a Redis URL"),
    ("abc", "not a Redis URL"),
    ("http://127.0.0.1:6379/0", "not a Redis URL"),
    ("redis://127.0.0.1:99999/0", "Port out of range"),
    ("redis://127.0.0.1:abc/0", "Port could not be cast"),
    ("redis://127.0.0.1:6379/abc", "database 'abc' is not a number"),
    ("redis:///0", "no host"),
)
COMMANDS = (
    ["enqueue", "--store", SAMPLE],
    ["worker", "--machine", "n300"],
    ["workers"],
    ["runs"],
    ["status"],
    ["watch"],
    ["report"],
    ["cancel", "r1"],
    ["retry", "r1", "--status", "HANG"],
    ["demo"],
)


def test_every_malformed_redis_url_is_one_line_for_every_command(capsys, monkeypatch, redis_server):
    """D9: in --redis and in SWEEPCTL_REDIS_URL, validated in one place before anything connects."""
    for url, needle in BAD_URLS:
        for command in COMMANDS:
            for via_env in (False, True):
                if via_env:
                    monkeypatch.setenv("SWEEPCTL_REDIS_URL", url)
                    argv = command
                else:
                    monkeypatch.delenv("SWEEPCTL_REDIS_URL", raising=False)
                    argv = [*command, "--redis", url]
                assert main(argv) == 2, (argv, url)
                err = capsys.readouterr().err.strip()
                assert len(err.splitlines()) == 1 and needle in err and "redis URL" in err, (argv, err)
    monkeypatch.delenv("SWEEPCTL_REDIS_URL")
    db99 = redis_server.rsplit("/", 1)[0] + "/99"  # the server has 16 databases
    for command in COMMANDS:
        assert main([*command, "--redis", db99]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "DB index is out of range" in err, err


def test_a_duplicate_key_in_an_expectations_file_is_an_error_with_its_line(capsys, tmp_path):
    """D10: PyYAML keeps the last of two equal keys silently; the loader refuses them."""
    entry = tmp_path / "entry.yaml"
    entry.write_text(
        "schema: 1\nentries:\n  - op: ttnn.add\n    status: known_failure\n    reason: r\n    link: l\n"
        "    status: expected_passing\n"
    )
    top = tmp_path / "top.yaml"
    top.write_text("schema: 1\nentries:\n  - {op: ttnn.add, status: expected_passing}\nentries: []\n")
    flow = tmp_path / "flow.yaml"
    flow.write_text("schema: 1\nentries:\n  - {op: ttnn.add, status: expected_passing, op: ttnn.mul}\n")
    for path, line, key, first in ((entry, 7, "status", 4), (top, 4, "entries", 2), (flow, 3, "op", 3)):
        assert main(["expectations", "check", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        said = f"{path}:{line}: not valid YAML: duplicate key '{key}' (first given at line {first})"
        assert err == f"sweepctl: error: {said}"


def _truncating_store(path: Path) -> str:
    """ttnn.add traced with 2, 4 and 5 positional args and a kwarg: all_cases's product holds calls
    that differ only after an absent positional, which are one vector."""

    def config(i: int, args: dict) -> dict:
        execution = {"source": "models/m.py", "machine_info": _MACHINE, "count": 1, "trace_uid": "t"}
        return {"config_id": i, "config_hash": config_hash("ttnn.add", args, _MACHINE), "arguments": args,
                "executions": [execution]}  # fmt: skip

    def t(n: int) -> dict:
        return tensor([1, 1, 32 * n, 32], "DataType.BFLOAT16", False)

    memory = {"memory_layout": "TensorMemoryLayout.INTERLEAVED", "buffer_type": "BufferType.DRAM", "shard_spec": "None"}
    configs = [
        config(1, {"arg0": t(1), "arg1": t(1)}),
        config(2, {"arg0": t(2), "arg1": t(2), "arg2": t(3), "arg3": t(4)}),
        config(3, {"arg0": t(1), "arg1": t(2), "arg2": t(5), "arg3": t(6), "arg4": t(7)}),
        config(4, {"arg0": t(3), "arg1": t(1), "memory_config": memory}),
    ]
    path.write_text(json.dumps({"operations": {"ttnn.add": {"configurations": configs}}, "metadata": {}}))
    return str(path)


def test_all_cases_counts_what_it_makes_and_dry_run_works_above_the_cap(capsys, redis_server, tmp_path):
    """The cap counted the raw product (216 here) while enqueue stores each distinct call once (132):
    the count is exact, and a dry run above the cap counts what the enqueue with the cap raised queues."""
    from sweeps.index import load

    store = _truncating_store(tmp_path / "trunc.json")
    selection = Selection(ops=["ttnn.add"], suite="all_cases", cap=10**6)
    index = load(store)
    assert count_all_cases(index, selection) == {("ttnn.add", "n300"): 132} == {
        ("ttnn.add", "n300"): len(all_cases(index, selection).vectors)
    }
    base = ["enqueue", "--store", store, "--suite", "all_cases", "--redis", redis_server, "--prefix", "cap", "--json"]
    assert main([*base, "--max-vectors", "100", "--dry-run"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["vectors"] == 132 and dry["over_cap"] == {"cap": 100, "max_vectors_needed": 132}
    assert main([*base, "--max-vectors", "100"]) == 2
    err = capsys.readouterr().err.strip()
    assert "132 vectors" in err and "exceed the cap of 100; raise it with --max-vectors 132" in err
    assert main([*base, "--max-vectors", "132"]) == 0
    real = json.loads(capsys.readouterr().out)
    assert real["added"] == 132 and real["per_machine"] == dry["per_machine"]
    assert sum(real["queued"].values()) == dry["per_machine"]["n300"].get("queued", 0)


@pytest.mark.slow
def test_enqueue_json_stays_json_when_the_index_cache_is_corrupt(redis_server, tmp_path):
    """The review's defect: structlog printed the cache warning on stdout, ahead of the JSON."""
    env = {"SWEEPCTL_CACHE_DIR": str(tmp_path / "cache")}
    argv = ["enqueue", "--store", SAMPLE, "--json", "--dry-run", "--redis", redis_server]
    assert sweepctl(*argv, env=env).returncode == 0
    (cached,) = (tmp_path / "cache" / "index").iterdir()
    cached.write_bytes(b"\x00not an index")
    piped = subprocess.run(
        f"{sys.executable} -m broker.cli {' '.join(argv)} | {sys.executable} -m json.tool", shell=True,
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env},
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["vectors"] == 33
    (log_line,) = [line for line in piped.stderr.splitlines() if "index_unreadable" in line]
    assert json.loads(log_line)["level"] == "warning"  # a JSON log line, on stderr


@pytest.mark.slow
def test_a_machine_with_no_live_worker_is_said_so_and_its_vectors_expire(redis_server, tmp_path):
    """Item 8: said at enqueue (stderr and --json), in status and watch; with --expires every vector
    ends EXPIRED though no worker ever comes, and watch exits 0 then. Watch into a log prints a line
    when something changed, at most every 10 s (here: the first and the last)."""
    url = ["--redis", redis_server]
    enq = sweepctl("enqueue", "--store", SAMPLE, "--machine", "t3k", "--expires", "11", "--json", *url)
    assert enq.returncode == 0, enq.stderr
    summary = json.loads(enq.stdout)
    assert summary["no_live_worker"] == {"t3k": 31} and summary["queued"] == {"t3k": 31}
    assert "no live t3k worker: 31 vectors wait until one starts, or end EXPIRED after 11 s" in enq.stderr
    run_id = summary["run_id"]
    state = json.loads(sweepctl("status", run_id, "--json", *url).stdout)
    assert state["no_live_worker"] == {"t3k": 31} and not state["complete"]
    assert "[no live t3k worker: 31 vectors wait]" in sweepctl("status", run_id, *url).stdout

    watch = sweepctl("watch", run_id, "--timeout", "60", *url)
    assert watch.returncode == 0, watch.stderr
    lines = watch.stderr.strip().splitlines()
    assert len(lines) == 2 and "no live t3k worker" in lines[0] and " done " in lines[1], lines
    client, keys = redis.Redis.from_url(redis_server), Keys()
    finals = [parse_final(v)[0] for v in client.hgetall(keys.final(run_id)).values()]
    assert len(finals) == 33 and finals.count(status.EXPIRED) == 31  # and the INVALID ones
    assert client.hlen(keys.records(run_id)) == 33 and not client.zscore(keys.expiring(), run_id)
    assert "EXPIRED 31" in sweepctl("report", run_id, *url).stdout


def test_expiry_waits_for_a_running_vector_and_books_each_once(shared_redis):
    from broker.app import make_app
    from broker.lifecycle import expire_due

    client, keys = redis.Redis.from_url(shared_redis), Keys()
    the_plan = plan(SAMPLE, Selection(), client, keys, "r1")
    publish(make_app(shared_redis, keys), client, keys, the_plan, expires=1.5)
    queued = [v.id for v in the_plan.expansion.vectors if v.id not in the_plan.never_run()]
    client.set(keys.lease("r1", queued[0]), "a-worker", ex=60)  # a worker runs it right now
    assert expire_due(client, keys) == {}  # not due yet
    time.sleep(1.6)
    assert expire_due(client, keys) == {"r1": len(queued) - 1} and client.zscore(keys.expiring(), "r1")
    assert expire_due(client, keys) == {"r1": 0}  # idempotent: nothing booked twice
    client.delete(keys.lease("r1", queued[0]))  # its worker died without a record
    assert expire_due(client, keys) == {"r1": 1} and client.zscore(keys.expiring(), "r1") is None
    prog = progress(client, keys, "r1")
    assert prog["complete"] and prog["counts"][status.EXPIRED] == len(queued) and client.hlen(keys.records("r1")) == 33


def test_expiry_books_a_stored_vector_this_sweepctl_cannot_read(shared_redis):
    """A run whose stored vector came from a newer sweepctl (or got corrupted) still ends: that vector
    is booked EXPIRED too, as a worker or `cancel` books it, and expiry never raises."""
    from broker.app import make_app
    from broker.lifecycle import expire_due

    client, keys = redis.Redis.from_url(shared_redis), Keys()
    the_plan = plan(SAMPLE, Selection(), client, keys, "r-newer")
    publish(make_app(shared_redis, keys), client, keys, the_plan, expires=0.2)
    queued = [v.id for v in the_plan.expansion.vectors if v.id not in the_plan.never_run()]
    client.hset(keys.vectors("r-newer"), queued[0], msgpack.packb({"schema": 10**6, "op": "ttnn.future"}))
    time.sleep(0.3)
    assert expire_due(client, keys) == {"r-newer": len(queued)} and not client.zscore(keys.expiring(), "r-newer")
    prog = progress(client, keys, "r-newer")
    assert prog["complete"] and prog["counts"][status.EXPIRED] == len(queued)
    assert parse_final(client.hget(keys.final("r-newer"), queued[0]))[0] == status.EXPIRED


@pytest.fixture
def n300_worker(redis_server, tmp_path):
    """A real emulated n300 worker, as `sweepctl worker` starts it, that also runs the test-only ops."""
    env = {**os.environ, "SWEEPCTL_ENABLE_TEST_OPS": "1", "SWEEPCTL_RESET_COMMAND": "true"}
    proc = start_worker(redis_server, tmp_path / "worker.log", "--machine", "n300", "--name", "reuse-n300", env=env)
    client, keys = redis.Redis.from_url(redis_server), Keys()
    deadline = time.monotonic() + 180
    while client.hget(keys.worker("reuse-n300"), "health") != b"GOOD":
        assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-2000:]
        time.sleep(0.2)
    yield client, keys
    stop_processes(proc)


def _finals(client: redis.Redis, keys: Keys, run_id: str) -> dict[str, str]:
    return {k.decode(): parse_final(v)[0] for k, v in client.hgetall(keys.final(run_id)).items()}


def _test_ops() -> list[dict]:
    from sweeps.vector import make_vector

    def vector(op: str, timeout: float = 10.0) -> dict:
        return make_vector(f"sweepctl.test.{op}", "faults", "n300", [1, 2], [1], {}, timeout)

    return [vector("noop"), vector("raise"), vector("hang", timeout=1.0)]


@pytest.mark.slow
def test_reuse_books_the_base_runs_passes_and_runs_the_rest(redis_server, n300_worker):
    """Item 8: a vector that PASSED in BASE on the same backend, ttnn version and machine is REUSED
    (final, counted apart, never started here); what failed, hung or never ran there runs again."""
    from broker.app import make_app
    from broker.cli.commands import _reuse
    from broker.coordinator import Plan, Reuse
    from sweeps.suites import Expansion

    client, keys = n300_worker
    url = ["--redis", redis_server]
    app = make_app(redis_server, keys)

    def add_test_ops(run_id: str, reuse: Reuse | None) -> dict:
        return publish(app, client, keys, Plan(run_id, Selection(), Expansion.of(_test_ops()), {}), reuse=reuse)

    assert sweepctl("enqueue", "--store", SAMPLE, "--machine", "n300", "--run-id", "base", *url).returncode == 0
    add_test_ops("base", None)  # a pass, an op failure and a hang join the run
    assert sweepctl("watch", "base", "--timeout", "240", *url).returncode == 0
    before = _finals(client, keys, "base")
    passed = {v for v, s in before.items() if s == status.PASS}
    others = sorted(s for s in before.values() if s != status.PASS)
    assert others == [status.FAIL_OP, status.HANG, status.INVALID, status.INVALID]

    argv = ("enqueue", "--store", SAMPLE, "--machine", "n300", "--run-id", "again", "--json", *url)
    assert _one_line(sweepctl(*argv[:-2], "--reuse", "nope", *url), "run nope: no such run")
    assert _one_line(sweepctl(*argv[:-2], "--reuse", "again", *url, "--run-id", "again"), "cannot reuse its own")
    enq = sweepctl(*argv[:-2], "--reuse", "base", *url)
    assert enq.returncode == 0, enq.stderr
    summary = json.loads(enq.stdout)
    assert summary["reused"] == {"n300": len(passed) - 1} and summary["queued"] == {} and not summary["chunks"]
    third = add_test_ops("again", _reuse(client, keys, argparse.Namespace(reuse="base", run_id="again")))
    assert third["reused"] == {"n300": 1} and third["queued"] == {"n300": 2}  # the failure and the hang run again
    assert sweepctl("watch", "again", "--timeout", "240", *url).returncode == 0
    after = _finals(client, keys, "again")
    assert {v for v, s in after.items() if s == status.REUSED} == passed
    assert client.hmget(keys.attempts("again"), sorted(passed)) == [None] * len(passed)  # none started here
    report = json.loads(sweepctl("report", "again", "--json", *url).stdout)
    assert report["complete"] and report["reused"] == len(passed) and report["executed"] == 2
    assert report["counts"][status.REUSED] == len(passed) and status.PASS not in report["counts"]
    assert report["pass_rate"] == 0.0 and report["failed"] == 2  # of what ran here: reuse inflates nothing
    assert all(status.REUSED not in b["statuses"] for b in report["buckets"])
    text = sweepctl("report", "again", *url).stdout
    assert f"reused {len(passed)} (passed in the base run, not run here)" in text
    noop = _test_ops()[0]["id"]
    record = msgpack.unpackb(client.hget(keys.records("again"), f"{noop}:0"))
    assert record["status"] == status.REUSED and record["message"].startswith("passed in run base (attempt 1")
    assert record["backend"] == "emulated" and record["pcc"] == 1.0

    # the base passed on the emulated backend: a machine whose workers run ttnn reuses none of it
    other = add_test_ops("other", Reuse("base", {"n300": "ttnn"}))
    assert other["reused"] == {} and other["queued"] == {"n300": 3}
    nobody = add_test_ops("nobody", Reuse("base", {}))
    assert nobody["reuse_skipped"] == {"n300": "no live worker says which backend would run it"}
    client.delete(keys.celery_prefix + "sweeps.n300")  # the worker need not run them


def test_a_reporter_reads_a_due_run_and_leaves_its_expiry_to_a_writer(capsys, tmp_path):
    """The reporter ACL user is read-only: `status` works and books nothing; a coordinator's books."""
    from broker.app import make_app
    from broker.coordinator import Plan
    from sweeps.suites import Expansion
    from sweeps.vector import make_vector
    from tests.test_security import ACL

    port = free_port()
    url = lambda user: f"redis://{user}:change-me-{user}@127.0.0.1:{port}/0"  # noqa: E731
    with running_redis(tmp_path, "--aclfile", str(ACL), port=port, ping=url("coordinator")):
        keys, coordinator = Keys(), redis.Redis.from_url(url("coordinator"))
        vector = make_vector("ttnn.add", "s", "t3k", [1, 8], [1], {}, 30.0)
        plan_ = Plan("due", Selection(), Expansion.of([vector]), {})
        publish(make_app(url("coordinator"), keys), coordinator, keys, plan_, expires=0.1)
        time.sleep(0.2)
        assert main(["status", "due", "--json", "--redis", url("reporter")]) == 0
        assert json.loads(capsys.readouterr().out)["no_live_worker"] == {"t3k": 1}
        assert not coordinator.hexists(keys.final("due"), vector["id"])
        assert main(["cancel", "due", "--redis", url("reporter")]) == 2  # a write: one line, no traceback
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "refused by the ACL of this Redis user" in err
        assert main(["status", "due", "--json", "--redis", url("coordinator")]) == 0
        assert json.loads(capsys.readouterr().out)["complete"]
        assert parse_final(coordinator.hget(keys.final("due"), vector["id"]))[0] == status.EXPIRED


def test_the_enqueue_that_finishes_a_dead_one_books_its_never_run_vectors_instead_of_queueing_them(
    capsys, shared_redis
):
    """D6: an enqueue killed after storing its vectors and before booking its INVALID and NOT_RUN
    ones: the next one books them (they never reach a worker) and queues the rest, each once."""
    from broker.coordinator import PUBLISHING, _upload

    client, keys = redis.Redis.from_url(shared_redis), Keys()
    the_plan = plan(SAMPLE, Selection(), client, keys, "half")
    meta = {"run_id": "half", "created": time.time(), "selection": Selection().as_dict()}
    client.hset(keys.run("half"), mapping={PUBLISHING: time.time(), "meta": json.dumps(meta)})
    _upload(client, keys, "half", the_plan.expansion.vectors, new_run=True)  # and then it died
    assert progress(client, keys, "half")["total"] == 33 and not client.exists(keys.final("half"))
    assert main(["enqueue", "--store", SAMPLE, "--run-id", "half", "--json", "--redis", shared_redis]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["requeued"] == 33 and summary["queued"] == {"galaxy": 18, "n300": 14}
    finals = _finals(client, keys, "half")
    assert sorted(finals.values()) == [status.INVALID]
    queued = _queued_ids(client, keys, "half")
    assert len(queued) == len(set(queued)) == 32 and not set(queued) & set(finals)


def test_a_machines_vectors_are_queued_grouped_by_the_mesh_they_open(capsys, shared_redis):
    """DeepSeek-V3's Galaxy configs in store order switch dispatch axis 32 times; the chunks, in the
    order workers take them, switch once (a Galaxy mesh reopen each), with every vector queued once."""
    from sweeps.meshplan import mesh_plan
    from sweeps.profiles import get_profile

    client, keys = redis.Redis.from_url(shared_redis), Keys("meshes")
    store = str(ROOT / "tests" / "data" / "ttnn_master_deepseek_v3_galaxy.json")
    argv = ["enqueue", "--store", store, "--run-id", "meshes", "--redis", shared_redis, "--prefix", "meshes"]
    assert main(argv) == 0
    taken = []  # kombu LPUSHes and workers BRPOP: oldest message last in the list
    for raw in reversed(client.lrange(keys.celery_prefix + "sweeps.galaxy", 0, -1)):
        taken += msgpack.unpackb(base64.b64decode(json.loads(raw)["body"]))[1]["ids"]
    payloads = dict(zip(taken, client.hmget(keys.vectors("meshes"), taken), strict=True))
    opens = [mesh_plan(get_profile("galaxy"), msgpack.unpackb(payloads[vid])).open_key for vid in taken]
    assert len(taken) == len(set(taken)) == 323 and len(set(opens)) == 2
    assert sum(a != b for a, b in zip(opens, opens[1:], strict=False)) == 1
