"""Benchmarks (run with `make bench`), each printing its figure and the ratio to a baseline
measured in the same run on a real redis-server:

* expansion: model_traced vectors/s from the store file through its index (every config
  distinct: the worst case), the one-off index build per store version, and all_cases vectors/s;
* enqueue: `sweepctl enqueue` in a fresh process, as users run it (index read + expand + host
  validation from its cache + records + upload + publish in chunks), against two plain Celery
  baselines: one message per vector with a shared producer, and the fair one, the same chunking
  (the payloads stored in Redis, one message of k ids each; its vectors are given, not expanded);
* worker framework overhead per vector with the no-op test op, against a plain Celery solo worker
  running one no-op task per vector, and the fair one: a plain Celery solo worker taking the same
  chunks of k ids, running each vector in-process and writing one result per vector
  (tests/benchmarks/plain_celery.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import redis

from broker.app import make_app
from broker.coordinator import Plan, chunk_size, publish
from broker.keys import Agg, Keys
from sweeps.index import load as load_index
from sweeps.suites import Expansion, Selection, expand
from sweeps.vector import make_vector
from tests.benchmarks import plain_celery
from tests.conftest import ROOT, write_json
from tests.synth import synthetic_store

ENQUEUE_BUDGET = 50_000
OVERHEAD_BUDGET_MS = 0.2


@pytest.mark.bench
def test_bench_expansion(tmp_path):
    path = str(write_json(tmp_path / "s.json", synthetic_store(50_000)))
    start = time.perf_counter()
    load_index(path)  # the one-off per store version: parse the JSON, canonicalise, save the index
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    traced = expand(load_index(path), Selection())
    traced_s = time.perf_counter() - start
    small = str(write_json(tmp_path / "small.json", synthetic_store(700)))  # ~100 configs per op: ~10^4 products
    index = load_index(small)
    start = time.perf_counter()
    cases = expand(index, Selection(suite="all_cases", cap=10**7))
    cases_s = time.perf_counter() - start
    n = len(traced.vectors)
    print(
        f"\nexpansion: model_traced {n:,} vectors (every config distinct) in {traced_s:.2f} s = "
        f"{n / traced_s:,.0f}/s ({n / traced_s / ENQUEUE_BUDGET:.2f}x the 50,000/s budget), store index read included; "
        f"building the index once per store version: {cold_s:.2f} s = {n / cold_s:,.0f} configs/s; "
        f"all_cases {len(cases.vectors):,} vectors (7 ops x ~100 observed values per slot) in {cases_s:.2f} s = "
        f"{len(cases.vectors) / cases_s:,.0f}/s "
        f"({len(cases.vectors) / cases_s / ENQUEUE_BUDGET:.2f}x)"
    )


def _enqueue(path: str, redis_url: str) -> tuple[dict, float]:
    """`sweepctl enqueue` as a user runs it, in a fresh process: its --json summary and wall seconds."""
    cmd = [sys.executable, "-m", "broker.cli", "enqueue", "--store", path, "--redis", redis_url, "--prefix", "bench"]
    start = time.perf_counter()
    done = subprocess.run([*cmd, "--json"], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout), time.perf_counter() - start


@pytest.mark.bench
def test_bench_enqueue(redis_server, tmp_path):
    path = str(write_json(tmp_path / "s.json", synthetic_store(50_000)))
    first, _ = _enqueue(path, redis_server)  # one-offs: the store index, host validation per ttnn version
    runs = [_enqueue(path, redis_server) for _ in range(3)]
    summary, wall = sorted(runs, key=lambda r: r[0]["seconds"])[1]  # the median run
    n = summary["added"]
    ours = n / summary["seconds"]
    # baseline 1: the same vectors, one Celery message each, shared producer (5,000 of them)
    plain = make_app(redis_server, Keys("plain"))
    index = load_index(path)
    vectors = expand(index, Selection()).vectors
    payloads = [v.payload for v in vectors if v.op == vectors[0].op][:5000]
    t0 = time.perf_counter()
    with plain.producer_or_acquire() as producer:
        for item in payloads:
            plain.send_task("sweepctl.run_chunk", kwargs={"run_id": "x", "machine": "n300", "vectors": [item]},
                            producer=producer)  # fmt: skip
    per_vector = len(payloads) / (time.perf_counter() - t0)
    # baseline 2 (fair): every vector of the store, stored and published in chunks of sweepctl's size
    size = chunk_size(len(vectors))
    given = {v.id: v.payload for v in vectors}
    client, producer = redis.Redis.from_url(redis_server), plain_celery.make_app(redis_server)
    t0 = time.perf_counter()
    messages = plain_celery.upload_and_publish(client, producer, given, size)
    chunked = len(vectors) / (time.perf_counter() - t0)
    print(
        f"\nenqueue {n:,} vectors ({summary['per_machine']}) in {summary['chunks']} chunks, `sweepctl enqueue` in a "
        f"fresh process, median of 3: {summary['seconds']:.2f} s of work (index read, expand, host validation from "
        f"its cache, records, upload, publish) -> {ours:,.0f} vectors/s ({ours / ENQUEUE_BUDGET:.2f}x the budget); "
        f"the whole command with interpreter start and imports {wall:.2f} s -> {n / wall:,.0f}/s. "
        f"Plain Celery, one message per vector: {per_vector:,.0f}/s -> sweepctl {ours / per_vector:.1f}x; "
        f"plain Celery chunked the same way ({len(vectors):,} vectors given, stored, {messages} messages of "
        f"{size} ids): {chunked:,.0f}/s -> sweepctl {ours / chunked:.2f}x. "
        f"First enqueue of this store (builds the index, validates {n:,} vectors' tensors in ttnn): "
        f"{first['seconds']:.1f} s"
    )
    assert first["added"] == n and all(r[0]["added"] == n for r in runs)


def _spawn(cmd: list[str], env: dict[str, str], log) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)


@pytest.mark.bench
def test_bench_worker_overhead(redis_server, tmp_path):
    n = 20_000  # a run big enough for full-size chunks, as production runs are
    size = chunk_size(n)
    client = redis.Redis.from_url(redis_server)
    env = {**os.environ, "SWEEPCTL_ENABLE_TEST_OPS": "1", "BENCH_REDIS_URL": redis_server}
    keys = Keys("bench")
    tensor = {"tensor": {"shape": [1, 1, 32, 32], "dtype": "BFLOAT16", "layout": "TILE", "memory_config": None}}
    vectors = [
        make_vector("sweepctl.test.noop", "bench", "n300", [1, 2], [tensor, i], {}, 30.0) for i in range(n)
    ]
    run = Plan("noop", Selection(), Expansion.of(vectors), {})
    publish(make_app(redis_server, keys), client, keys, run)
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    cmd = [sys.executable, "-m", "broker.cli", "worker", "--machine", "n300", "--backend", "emulated"]
    worker = _spawn(cmd + ["--name", "bench", "--redis", redis_server, "--prefix", "bench"], env, log)
    deadline = time.monotonic() + 300
    while client.hget(keys.agg("noop"), Agg.DONE) != str(n).encode() and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(worker.pid, signal.SIGTERM)
    worker.wait(timeout=60)
    agg = client.hgetall(keys.agg("noop"))
    ours_ms = (float(agg[Agg.T_LAST.encode()]) - float(agg[Agg.T_FIRST.encode()])) / (n - 1) * 1000.0

    producer = plain_celery.make_app(redis_server)
    quarter = n // 4  # one task per vector is 10x slower: a quarter of the vectors is plenty
    for i in range(quarter):
        producer.send_task("plain.noop", args=(i, quarter - 1, b"x" * 700))
    per_vector_ms = _plain_worker_ms(client, env, log, quarter)
    client.delete(plain_celery.STAMPS)
    plain_celery.upload_and_publish(client, producer, {v.id: v.payload for v in run.expansion.vectors}, size)
    chunked_ms = _plain_worker_ms(client, env, log, n)
    assert client.hlen(plain_celery.RESULTS) == n
    print(
        f"\nworker framework overhead, {n} no-op vectors in chunks of {size}: {ours_ms:.3f} ms/vector = "
        f"{ours_ms / OVERHEAD_BUDGET_MS:.2f}x the {OVERHEAD_BUDGET_MS} ms budget (claim, lease, executor round trip, "
        "record and aggregates included). Plain Celery solo worker, one no-op task per vector: "
        f"{per_vector_ms:.3f} ms -> sweepctl {per_vector_ms / ours_ms:.2f}x its speed; chunked the same way (one "
        f"HMGET per chunk, in-process no-op, one result HSET per vector): {chunked_ms:.3f} ms -> sweepctl "
        f"{chunked_ms / ours_ms:.2f}x its speed"
    )


def _plain_worker_ms(client: redis.Redis, env: dict[str, str], log, count: int) -> float:
    """Run a plain Celery solo worker over what is queued until the first and last of `count`
    vectors are stamped; ms per vector between the two stamps."""
    cmd = [sys.executable, "-m", "celery", "-A", "tests.benchmarks.plain_celery", "worker", "-P", "solo", "-c", "1"]
    cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"]
    plain = _spawn(cmd, env, log)
    deadline = time.monotonic() + 300
    while client.hlen(plain_celery.STAMPS) < 2 and time.monotonic() < deadline:  # first and last stamped
        time.sleep(0.2)
    os.killpg(plain.pid, signal.SIGTERM)
    plain.wait(timeout=60)
    stamps = {int(k): float(v) for k, v in client.hgetall(plain_celery.STAMPS).items()}
    return (stamps[count - 1] - stamps[0]) / (count - 1) * 1000.0
