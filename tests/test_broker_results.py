"""Records and aggregates against a real redis-server: write-once, redelivery skips, counters."""

from __future__ import annotations

import pytest
import redis

from broker.keys import Keys
from broker.reports.summary import build, progress
from broker.results import (
    CANCELED,
    DEAD,
    FINAL,
    LEASED,
    RELEASE,
    Results,
    make_record,
    pcc_bucket,
    pcc_of_bucket,
    signature,
)
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
    assert client.get(keys.lease(RUN, vector["id"])).decode() == claim.lease and claim.lease.startswith("w1/")
    outcome = {"status": status.PASS, "pcc": 0.9999, "threshold": 0.999, "e2e_ms": 2.0}
    record = make_record(vector, RUN, attempt, outcome, backend="emulated", worker="w1")
    assert results.finish(record, lease=claim.lease)
    assert not results.finish(record, lease=claim.lease)  # a retried write after a lost reply: nothing changes
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
    client.hset(keys.vectors(RUN), vector["id"], b"payload")
    claim = results.claim(RUN, [vector["id"]])[0]
    first = claim.attempt
    # while attempt 1 holds its lease, a redelivered copy of the chunk must not run the vector
    assert results.claim(RUN, [vector["id"]])[0].action == LEASED
    infra = make_record(vector, RUN, first, {"status": status.INFRA, "message": "device reset failed"})
    results.finish(infra, final=False, lease=claim.lease)
    again = results.claim(RUN, [vector["id"]])[0]
    assert (first, again.action, again.attempt, again.lost) == (1, RUN_IT, 2, False)
    second = again.attempt
    results.finish(make_record(vector, RUN, second, {"status": status.FAIL_OP, "message": "TT_FATAL at 0x7f12: bad"}),
                   lease=again.lease)  # fmt: skip
    assert client.hlen(keys.records(RUN)) == 2
    prog = progress(client, keys, RUN)
    assert prog["done"] == 1 and prog["counts"] == {status.FAIL_OP: 1} and prog["complete"]


def test_report_from_aggregates(redis_server):
    client, keys = _setup(redis_server, 4)
    results = Results(client, keys, worker="w1")
    pccs = {1: 0.99999, 2: 0.9999, 3: 0.95}
    for n, pcc in pccs.items():
        vector = _vector(n)
        client.hset(keys.vectors(RUN), vector["id"], b"payload")
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
    client.hset(keys.vectors(RUN), vector["id"], b"payload")
    results.claim(RUN, [vector["id"]], ttl=1)
    client.delete(keys.lease(RUN, vector["id"]))  # the lease lapsed: nobody renews it any more
    claim = results.claim(RUN, [vector["id"]])[0]
    assert (claim.action, claim.lost, claim.attempt) == (RUN_IT, True, 2)
    client.delete(keys.lease(RUN, vector["id"]))  # lost again: the second time it is not run again
    claim = results.claim(RUN, [vector["id"]])[0]
    assert (claim.action, claim.lost, claim.attempt) == (DEAD, True, 2)
    assert client.hget(keys.attempts(RUN), vector["id"]) == b"2"


def test_a_claim_is_atomic_per_vector_idempotent_when_resent_and_refused_once_canceled(redis_server):
    client, keys = _setup(redis_server, 3)
    a, b = Results(client, keys, worker="a"), Results(client, keys, worker="b")
    vectors = [_vector(n) for n in range(1, 4)]
    ids = [v["id"] for v in vectors]
    client.hset(keys.vectors(RUN), mapping={vid: b"payload" for vid in ids})
    first = a.claim_as("a/1", RUN, ids[:2], 30, 2)
    assert [(c.action, c.attempt) for c in first] == [(RUN_IT, 1), (RUN_IT, 1)]
    resent = a.claim_as("a/1", RUN, ids[:2], 30, 2)  # the same call after a lost reply: the same answer
    assert [(c.action, c.attempt) for c in resent] == [(RUN_IT, 1), (RUN_IT, 1)]
    assert [c.action for c in b.claim(RUN, ids)] == [LEASED, LEASED, RUN_IT]  # a copy skips what a holds
    assert client.hmget(keys.attempts(RUN), ids) == [b"1", b"1", b"1"]  # started once each
    # a released claim that never started gives its attempt number back
    a.write(RUN, [a.release_op(RUN, ids[0], 1, "a/1")])
    assert client.hget(keys.attempts(RUN), ids[0]) is None and not client.exists(keys.lease(RUN, ids[0]))
    # once the run is canceled nothing starts; its record for a vector canceled meanwhile is dropped
    client.hset(keys.run(RUN), "state", "canceled")
    assert [c.action for c in b.claim(RUN, ids)] == [CANCELED, LEASED, LEASED]
    outcome = {"status": status.CANCELED, "message": "canceled"}
    ops = a.unrun_ops(RUN, [(vid, b"payload") for vid in ids], outcome, "n300", backend="coordinator")
    assert a.write(RUN, ops)[1] == 1  # the two leased vectors are left to their holders
    late = make_record(vectors[0], RUN, 1, {"status": status.PASS, "pcc": 1.0}, backend="emulated")
    assert not a.finish(late)
    assert [c.action for c in b.claim(RUN, ids[:1])] == [FINAL]
    assert client.hlen(keys.records(RUN)) == 1 and client.hget(keys.agg(RUN), b"s|CANCELED") == b"1"


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


def test_a_write_operation_is_built_from_exactly_its_named_fields_in_the_scripts_order():
    fields = {"vector": "v", "attempt": 2, "lease_key": "k", "lease": "w/1", "field": "v:2"}
    assert RELEASE.pack(**fields) == ["release", "v", 2, "k", "w/1", "v:2"]
    assert RELEASE.named(RELEASE.pack(**fields)) == fields
    assert RELEASE.lua("entry") == "local vector, attempt, lease_key, lease, field = unpack(entry, 2, 6)"
    for wrong in ({**fields, "extra": 1}, {k: v for k, v in fields.items() if k != "lease"}):
        with pytest.raises(TypeError, match="release takes vector, attempt, lease_key, lease, field"):
            RELEASE.pack(**wrong)
