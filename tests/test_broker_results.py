"""Records and aggregates against a real redis-server: write-once, redelivery skips, counters."""

from __future__ import annotations

import redis

from broker.keys import Keys
from broker.report import build, progress
from broker.results import FINAL, LEASED, Results, make_record, pcc_bucket, pcc_of_bucket, signature
from broker.results import RUN as RUN_IT
from sweeps import status
from sweeps.vector import make_vector

RUN = "run-test"


def _vector(n: int, op: str = "ttnn.add", machine: str = "n300") -> dict:
    tensor = {"tensor": {"shape": [1, 1, 32, 32 * n], "dtype": "BFLOAT16", "layout": "TILE"}}
    return make_vector(op, "model_traced", machine, [1, 2], [tensor, tensor], {}, 30.0)


def _setup(url: str, total: int) -> tuple[redis.Redis, Keys]:
    client = redis.Redis.from_url(url)
    keys = Keys("t1")
    client.hset(keys.run(RUN), mapping={"meta": '{"created": 0, "selection": {"suite": "s"}}', "total": total})
    client.zadd(keys.runs(), {RUN: 0})
    return client, keys


def test_an_attempt_record_is_written_once_and_counted_once(redis_server):
    client, keys = _setup(redis_server, 1)
    results = Results(client, keys, worker="w1")
    vector = _vector(1)
    client.hset(keys.vectors(RUN), vector["id"], b"payload")
    [claim] = results.claim(RUN, [vector["id"]])
    assert (claim.payload, claim.action, claim.attempt) == (b"payload", RUN_IT, 1)
    attempt = claim.attempt
    results.start(RUN, vector["id"], attempt)
    assert client.get(keys.lease(RUN, vector["id"])) == b"w1"
    outcome = {"status": status.PASS, "pcc": 0.9999, "threshold": 0.999, "e2e_ms": 2.0}
    record = make_record(vector, RUN, attempt, outcome, backend="emulated", worker="w1")
    results.finish(record)
    results.finish(record)  # a retried write after a lost reply: nothing changes
    assert client.hlen(keys.records(RUN)) == 1
    agg = client.hgetall(keys.agg(RUN))
    assert agg[b"done"] == b"1" and agg[b"s|PASS"] == b"1" and agg[b"b|emulated"] == b"1"
    assert client.get(keys.lease(RUN, vector["id"])) is None
    # a redelivered chunk: the finished vector is skipped, its attempt counter untouched
    assert results.claim(RUN, [vector["id"]])[0].action == FINAL
    assert client.hget(keys.attempts(RUN), vector["id"]) == b"1"


def test_a_second_attempt_keeps_the_first_record_and_only_the_final_one_counts(redis_server):
    client, keys = _setup(redis_server, 1)
    results = Results(client, keys, worker="w1")
    vector = _vector(2)
    client.hset(keys.vectors(RUN), vector["id"], b"payload")  # the run's total is the vectors it stores
    first = results.claim(RUN, [vector["id"]])[0].attempt
    results.start(RUN, vector["id"], first)
    # while attempt 1 holds its lease, a redelivered copy of the chunk must not run the vector
    assert results.claim(RUN, [vector["id"]])[0].action == LEASED
    infra = make_record(vector, RUN, first, {"status": status.INFRA, "message": "device reset failed"})
    results.finish(infra, final=False)
    again = results.claim(RUN, [vector["id"]])[0]
    assert (first, again.action, again.attempt, again.lost) == (1, RUN_IT, 2, False)
    second = again.attempt
    results.start(RUN, vector["id"], second)
    results.finish(make_record(vector, RUN, second, {"status": status.FAIL_OP, "message": "TT_FATAL at 0x7f12: bad"}))
    assert client.hlen(keys.records(RUN)) == 2
    prog = progress(client, keys, RUN)
    assert prog["done"] == 1 and prog["counts"] == {status.FAIL_OP: 1} and prog["complete"]


def test_report_from_aggregates(redis_server):
    client, keys = _setup(redis_server, 4)
    results = Results(client, keys, worker="w1")
    pccs = {1: 0.99999, 2: 0.9999, 3: 0.95}
    for n, pcc in pccs.items():
        vector = _vector(n)
        attempt = results.claim(RUN, [vector["id"]])[0].attempt
        state = status.PASS if pcc > 0.99 else status.FAIL_ACCURACY
        outcome = {"status": state, "pcc": pcc, "threshold": 0.99, "e2e_ms": float(n), "message": ""}
        results.finish(make_record(vector, RUN, attempt, outcome, backend="emulated"))
    invalid = _vector(4, machine="galaxy")
    results.finish(make_record(invalid, RUN, 0, {"status": status.INVALID, "message": "grid outside"}))
    report = build(client, keys, RUN)
    row = report["ops"]["ttnn.add"]
    assert row["executed"] == 3 and row["pass"] == 2
    assert abs(row["pass_rate"] - 2 / 3) < 1e-9
    assert row["pcc_min"] == 0.95
    assert 0.999 <= row["pcc_median"] <= 0.9999  # the bucket holding 0.9999
    assert 1.5 <= row["e2e_ms_p50"] <= 2.5
    assert report["machines"]["galaxy"]["executed"] == 0  # INVALID is not executed
    assert report["pass_rate"] == 2 / 3 and report["failed"] == 1
    assert [f["status"] for f in report["failures"]] == [status.FAIL_ACCURACY]


def test_pcc_buckets_order_and_edges():
    values = [0.0, 0.5, 0.9, 0.99, 0.999, 0.99999, 1.0]
    buckets = [pcc_bucket(v) for v in values]
    assert buckets == sorted(buckets) and buckets[-1] == 120
    for value in values[1:-1]:
        assert pcc_of_bucket(pcc_bucket(value)) <= value


def test_signature_strips_addresses_shapes_and_numbers():
    a = signature("TT_FATAL @ op.cpp:123: Shard width 17 must match physical width 34 at 0x7ffd1234")
    b = signature("TT_FATAL @ op.cpp:456: Shard width 33 must match physical width 64 at 0x55aa")
    assert a == b
    assert signature("shape [1, 1, 32, 64] bad") == signature("shape [2, 4, 64, 128] bad")


def test_an_attempt_whose_worker_died_is_claimed_as_lost(redis_server):
    client, keys = _setup(redis_server, 1)
    results = Results(client, keys, worker="w1")
    vector = _vector(3)
    results.start(RUN, vector["id"], 1, lease_ttl=1)
    client.delete(keys.lease(RUN, vector["id"]))  # the lease lapsed: nobody renews it any more
    claim = results.claim(RUN, [vector["id"]])[0]
    assert (claim.action, claim.tried, claim.lost, claim.attempt) == (RUN_IT, 1, True, 2)


def test_finishing_unrun_vectors_in_bulk_writes_what_one_by_one_writes(redis_server):
    """The coordinator's bulk op for NOT_RUN/INVALID and the per-record op must agree exactly."""
    client = redis.Redis.from_url(redis_server)
    vectors = [_vector(n) for n in range(1, 6)]
    messages = [f"input 0: shard needs {n * 4096} B of L1 per core, n300 has 1499136 B" for n in range(5)]
    seen = {}
    for name in ("one", "bulk"):
        keys = Keys(name)
        results = Results(client, keys)
        records = [
            make_record(v, RUN, 0, {"status": status.INVALID, "message": m}, backend="coordinator", start=1.0, end=1.0)
            for v, m in zip(vectors, messages, strict=True)
        ]
        if name == "one":
            results.write(RUN, [results.finish_op(r) for r in records])
        else:
            items = [(v["id"], v.get("config_hash"), m) for v, m in zip(vectors, messages, strict=True)]
            op = results.finish_unrun_op(records[0], items)
            results.write(RUN, [op])
            results.write(RUN, [op])  # resent after a lost reply: nothing moves twice
        agg = {k: v for k, v in client.hgetall(keys.agg(RUN)).items() if k not in (b"t_first", b"t_last")}
        seen[name] = (agg, client.hgetall(keys.final(RUN)), client.hgetall(keys.records(RUN)))
    assert seen["bulk"] == seen["one"]
    assert seen["bulk"][0][b"s|INVALID"] == b"5" and len(seen["bulk"][2]) == 5
