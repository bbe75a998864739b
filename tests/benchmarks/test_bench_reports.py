"""Report benchmarks (run with `make bench`): `sweepctl report` and `report --compare` on runs of
1,000,000 results synthesized in a real redis-server, in the shape the workers' write script leaves
(final hash `STATUS|pcc|e2e|SIG` per vector, aggregates, failing records, vectors), timed through
the CLI entry point as a user runs it. Budgets: report < 1 s, compare of two such runs < 10 s."""

from __future__ import annotations

import json
import random
import time

import msgpack
import pytest
import redis

from broker.cli import main
from broker.keys import Agg, Keys
from broker.results import make_record, sig_id, signature
from sweeps import status
from sweeps.vector import make_vector

N = 1_000_000
OPS = [f"ttnn.op{i}" for i in range(40)]


def _synthesize(client, keys: Keys, run_id: str, seed: int, fail_every: int) -> None:
    rng = random.Random(seed)
    meta = {"run_id": run_id, "created": time.time(), "who": "bench", "host": "bench", "selection": {"suite": "s"},
            "versions": {"ttnn": "0.81.1", "sweepctl": "0", "celery": "0"}, "expires": None}  # fmt: skip
    client.hset(keys.run(run_id), mapping={"meta": json.dumps(meta), "total": N})
    client.zadd(keys.runs(), {run_id: meta["created"]})
    agg: dict[str, int] = {}
    pipe = client.pipeline(transaction=False)
    finals: dict[str, str] = {}
    message = "TT_FATAL @ op.cpp:12: width 64 != 96"
    sig = sig_id(signature(message))
    for i in range(N):
        op = OPS[i % len(OPS)]
        failed = i % fail_every == 0
        state = status.FAIL_ACCURACY if failed else status.PASS
        pcc = 0.9 if failed else 0.99999 - rng.random() * 1e-5
        e2e = 0.2 + rng.random() * 0.01
        finals[f"{i:032x}"] = f"{state}|{pcc!r}|{e2e!r}|{sig if failed else ''}"
        for name in (Agg.DONE, Agg.field(Agg.STATUS, state), Agg.field(Agg.OP_STATUS, op, state),
                     Agg.field(Agg.MACHINE_STATUS, "n300", state), Agg.field(Agg.MACHINE_OP_STATUS, "n300", op, state),
                     Agg.field(Agg.PCC_HIST, op, str(50 if not failed else 10)),
                     Agg.field(Agg.E2E_HIST, op, str(int(8 * 7.6))), Agg.field(Agg.BACKEND, "emulated")):  # fmt: skip
            agg[name] = agg.get(name, 0) + 1
        if failed:
            bucket = Agg.field(Agg.BUCKET, sig, state, op, "n300")
            agg[bucket] = agg.get(bucket, 0) + 1
        if len(finals) == 50_000:
            pipe.hset(keys.final(run_id), mapping=finals)
            pipe.execute()
            finals = {}
    if finals:
        pipe.hset(keys.final(run_id), mapping=finals)
    agg.update({Agg.field(Agg.BUCKET_TEXT, sig): signature(message), Agg.field(Agg.BUCKET_EXAMPLE, sig): f"{0:032x}",
                Agg.T_FIRST: 1, Agg.T_LAST: 2})  # fmt: skip
    pipe.hset(keys.agg(run_id), mapping=agg)
    vector = make_vector("ttnn.op0", "s", "n300", [1, 2], [0], {}, 30.0)
    record = make_record(vector, run_id, 1, {"status": status.FAIL_ACCURACY, "message": message, "pcc": 0.9})
    for i in range(0, N, fail_every):
        pipe.hset(keys.failed(run_id), f"{i:032x}", msgpack.packb(record))
        pipe.hset(keys.vectors(run_id), f"{i:032x}", msgpack.packb({**vector, "id": f"{i:032x}"}))
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
    t0 = time.perf_counter()
    _synthesize(client, keys, "base", 1, fail_every=1000)
    _synthesize(client, keys, "run", 2, fail_every=997)  # ~2,000 vectors change status
    made = time.perf_counter() - t0
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
            f"synthesis took {made:.0f} s"
        )
