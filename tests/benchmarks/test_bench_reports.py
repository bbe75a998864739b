"""Report benchmarks (run with `make bench`): `sweepctl report` and `report --compare` on runs of
1,000,000 results written into a real redis-server through the workers' own write path
(Results.finish_op and the write script, in batches as the record writer sends them), timed
through the CLI entry point as a user runs it. Budgets: report < 1 s, compare of two such runs
< 10 s. The time spent making the records (Python) and writing them (the script) is printed apart."""

from __future__ import annotations

import json
import random
import time

import msgpack
import pytest
import redis

from broker.cli import main
from broker.keys import Keys
from broker.results import Results, make_record
from sweeps import status
from sweeps.vector import make_vector

N = 1_000_000
OPS = [f"ttnn.op{i}" for i in range(40)]
BATCH = 500  # records per script call


def _synthesize(client, keys: Keys, run_id: str, seed: int, fail_every: int) -> tuple[float, float]:
    """A run of N results (vector i has id `i` in hex), each written as a worker writes it; returns
    (seconds making the records and their ops, seconds in the write script)."""
    rng = random.Random(seed)
    meta = {"run_id": run_id, "created": time.time(), "who": "bench", "host": "bench", "selection": {"suite": "s"},
            "versions": {"ttnn": "0.81.1", "sweepctl": "0", "celery": "0"}, "expires": None}  # fmt: skip
    client.hset(keys.run(run_id), mapping={"meta": json.dumps(meta), "total": N})
    client.zadd(keys.runs(), {run_id: meta["created"]})
    results = Results(client, keys, "bench")
    pipe = client.pipeline(transaction=False)
    message = "TT_FATAL @ op.cpp:12: width 64 != 96"
    where = {"backend": "emulated", "worker": "bench", "host": "bench", "devices": [0], "ttnn_version": "0.81.1"}
    making = writing = 0.0
    for first in range(0, N, BATCH):
        t0 = time.perf_counter()
        ops = []
        for i in range(first, min(first + BATCH, N)):
            failed = i % fail_every == 0
            outcome = {
                "status": status.FAIL_ACCURACY if failed else status.PASS,
                "pcc": 0.9 if failed else 0.99999 - rng.random() * 1e-5,
                "threshold": 0.999,
                "message": message if failed else "",
                "e2e_ms": 0.2 + rng.random() * 0.01,
            }
            now = time.time()
            vector = {"id": f"{i:032x}", "op": OPS[i % len(OPS)], "machine": "n300", "config_hash": None}
            ops.append(results.finish_op(make_record(vector, run_id, 1, outcome, start=now, end=now, **where)))
        t1 = time.perf_counter()
        results.write(run_id, ops, pipe)
        pipe.execute()
        making += t1 - t0
        writing += time.perf_counter() - t1
    return making, writing


def _store_vectors(client, keys: Keys, run_id: str) -> None:
    """What enqueue stores: every vector of the run (its total is the vectors it stores)."""
    templates = [make_vector(op, "s", "n300", [1, 2], [0], {}, 30.0) for op in OPS]
    pipe = client.pipeline(transaction=False)
    for first in range(0, N, 50_000):
        ids = [f"{i:032x}" for i in range(first, min(first + 50_000, N))]
        vectors = {vid: msgpack.packb({**templates[int(vid, 16) % len(OPS)], "id": vid}) for vid in ids}
        pipe.hset(keys.vectors(run_id), mapping=vectors)
        pipe.execute()


def _timed(argv: list[str], capsys) -> tuple[float, int, str]:
    start = time.perf_counter()
    code = main(argv)
    took = time.perf_counter() - start
    return took, code, capsys.readouterr().out


@pytest.mark.bench
def test_bench_report_and_compare_on_a_million_results(redis_server, capsys):
    client = redis.Redis.from_url(redis_server)
    keys = Keys("bench")
    for run_id in ("base", "run"):
        _store_vectors(client, keys, run_id)
    made = [_synthesize(client, keys, "base", 1, fail_every=1000),
            _synthesize(client, keys, "run", 2, fail_every=997)]  # ~2,000 vectors change status  # fmt: skip
    making, writing = (sum(part) / len(made) for part in zip(*made, strict=True))
    common = ["--redis", redis_server, "--prefix", "bench"]
    report_s, code, out = _timed(["report", "run", *common], capsys)
    assert code == 1 and "ttnn.op0" in out
    compare_s, code, out = _timed(["report", "run", "--compare", "base", "--json", *common], capsys)
    diff = json.loads(out)["compare"]
    assert code == 1 and diff["compared"] == N
    with capsys.disabled():
        print(
            f"\nreport on {N:,} results: {report_s:.3f} s ({report_s / 1.0:.2f}x the 1 s budget); compare of two "
            f"{N:,}-result runs: {compare_s:.2f} s ({compare_s / 10.0:.2f}x the 10 s budget; "
            f"{diff['counts']['newly_failing']} newly failing, {diff['counts']['newly_passing']} newly passing); "
            f"each run's {N:,} results written through the workers' write path first: making the records and "
            f"ops {making:.1f} s, the write script {writing:.1f} s ({N / writing:,.0f} results/s, batches of {BATCH})"
        )
