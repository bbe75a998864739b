"""The batched write, claim and renew scripts against the one-command-per-field scripts they replaced
(tests/results_reference.py, the oracle): the same ops leave byte-for-byte the same Redis state and
replies, on a real redis-server; a write that fails leaves nothing written; a batch costs a few
commands per vector. Two rules changed since the oracle, and where they make the two differ the
test says what the product must leave: a claim counts a vector's lost attempts in the run's lost hash
(the oracle took the attempt number for that count), and a finish raises its vector's attempt counter
to its attempt when lower (its claim is gone: a Redis that restarted without its last second)."""

from __future__ import annotations

import msgpack
import pytest
import redis

from broker.keys import Keys
from broker.results import Results, make_record
from sweeps import status
from sweeps.vector import make_vector
from tests.results_reference import REFERENCE_CLAIM, REFERENCE_RENEW, REFERENCE_WRITE

RUN = "mix"
OPS = (("ttnn.add", "n300"), ("ttnn.mul", "n300"), ("ttnn.add", "t3k"))


def _vectors(n: int) -> list[dict]:
    tensor = {"tensor": {"shape": [1, 1, 32, 32], "dtype": "BFLOAT16", "layout": "TILE"}}
    return [make_vector(OPS[i % 3][0], "model_traced", OPS[i % 3][1], [1, 2], [tensor, i], {}, 30.0) for i in range(n)]


def _record(vector: dict, attempt: int, state: str, worker: str = "w1", **outcome) -> dict:
    backend = "coordinator" if attempt == 0 else ("emulated" if vector["op"] == "ttnn.add" else "ttnn")
    fields = {"status": state, **outcome}
    return make_record(vector, RUN, attempt, fields, backend=backend, worker=worker, start=1.0, end=2.0)


def _expected(reference: redis.Redis, keys: Keys, lost: dict, raised: dict) -> dict:
    """What the product's scripts must leave where the oracle's left `reference`: the lost counts,
    and the attempt counters raised by finishes that no claim started."""
    state = _state(reference)
    if lost:
        state[keys.lost(RUN).encode()] = lost
    if raised:
        state[keys.attempts(RUN).encode()] = {**state.get(keys.attempts(RUN).encode(), {}), **raised}
    return state


def _state(client: redis.Redis) -> dict:
    """Every key's type and value (a lease: its value and whether it expires)."""
    state = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"hash":
            state[key] = client.hgetall(key)
        else:
            assert kind == b"string", key
            state[key] = (client.get(key), client.ttl(key) > 0)
    return state


class _Side:
    """One database of the server, written by the product's scripts or by the oracle's."""

    def __init__(self, url: str, db: int, reference: bool) -> None:
        self.client = redis.Redis.from_url(url, db=db)
        self.keys = Keys("mix")
        self.results = {w: Results(self.client, self.keys, worker=w) for w in ("w1", "w2", "coordinator")}
        if reference:  # the oracle's scripts in place of the product's, nothing else changed
            for results in self.results.values():
                results._write = self.client.register_script(REFERENCE_WRITE)
                results._claim = self.client.register_script(REFERENCE_CLAIM)
                results._renew = self.client.register_script(REFERENCE_RENEW)


@pytest.fixture
def sides(redis_server):
    url = redis_server.rsplit("/", 1)[0]
    return _Side(url, 1, reference=True), _Side(url, 2, reference=False)


def test_a_mixed_sequence_of_ops_leaves_what_the_reference_scripts_leave(sides):
    vectors = _vectors(26)
    ids = [v["id"] for v in vectors]
    keys = sides[0].keys
    steps: list = []  # (what, function of a side returning its reply)

    lost: dict[bytes, bytes] = {}  # the lost hash the product's claims must leave (the oracle keeps none)
    raised: dict[bytes, bytes] = {}  # attempt counters the product's finishes raise (the oracle's stay)

    def write(what: str, worker: str, build, raises: dict | None = None) -> None:
        """`raises`: the vectors finished at an attempt no claim started, with their counters after."""
        ops = build(sides[0].results[worker])  # built once (their timestamps too), sent to both sides

        def act(side: _Side) -> list:
            raised.update(raises or {})
            return side.results[worker].write(RUN, ops)

        steps.append((what, act))

    def claim(what: str, value: str, which: list[str], max_lost: int = 2, counts: dict | None = None) -> None:
        """`counts`: the vectors whose lost attempts this claim counts, with their counts after it."""
        worker = value.split("/")[0]
        def act(side: _Side) -> list:
            claims = side.results[worker].claim_as(value, RUN, which, 30, max_lost)
            lost.update(counts or {})
            return [(c.action, c.attempt, c.lost, c.payload) for c in claims]

        steps.append((what, act))

    def on_both(what: str, act) -> None:
        steps.append((what, act))

    def setup(side: _Side) -> None:
        side.client.hset(keys.run(RUN), mapping={"meta": "{}", "total": len(ids)})
        stored = [v for v in vectors if v["id"] not in (ids[22], ids[23])]
        side.client.hset(keys.vectors(RUN), mapping={v["id"]: msgpack.packb(v) for v in stored})
        earlier = {"pmin|ttnn.mul": "0.97", "pmin|ttnn.add": "0.6", "s|PASS": "3"}  # an earlier writer's
        side.client.hset(keys.agg(RUN), mapping=earlier)

    on_both("setup", setup)
    claim("claim, a vector twice and two not in the run", "w1/a", [*ids[:12], ids[0], ids[22], ids[23]])
    claim("the same claim resent", "w1/a", [*ids[:12], ids[0], ids[22], ids[23]])
    claim("another worker's copy", "w2/b", [ids[0], ids[1], ids[12], ids[13], ids[14]])
    fatal = "TT_FATAL @ op.cpp:{}: width {} must match {} at 0x7f{}"
    write("a worker's batch of every kind of finish", "w1", lambda r: [
        r.finish_op(_record(vectors[0], 1, status.PASS, pcc=0.99999, e2e_ms=2.0), lease="w1/a"),
        r.finish_op(_record(vectors[1], 1, status.FAIL_ACCURACY, pcc=0.95, threshold=0.99, e2e_ms=3.5), lease="w1/a"),
        r.finish_op(_record(vectors[2], 1, status.FAIL_OP, message=fatal.format(1, 17, 34, 12)), lease="w1/a"),
        r.finish_op(_record(vectors[3], 1, status.FAIL_OP, message=fatal.format(2, 3, 6, 9), e2e_ms=0.4), lease="w1/a"),
        r.finish_op(_record(vectors[4], 1, status.HANG, message="timed out after 30 s", e2e_ms=30000.0), lease="w1/a"),
        r.finish_op(_record(vectors[5], 1, status.CRASH, message="executor died: SIGSEGV"), lease="w1/a"),
        r.finish_op(_record(vectors[6], 1, status.ERROR, message="building input 1: bad dtype"), lease="w1/a"),
        r.finish_op(_record(vectors[7], 1, status.INFRA, message="device reset failed"), final=False, lease="w1/a"),
        r.finish_op(_record(vectors[0], 1, status.PASS, pcc=0.99999, e2e_ms=2.0), lease="w1/a"),  # resent in the batch
        r.finish_op(_record(vectors[8], 1, status.PASS, pcc=0.999, e2e_ms=2.1), lease="w1/a"),  # a lower PCC
        r.finish_op(_record(vectors[9], 1, status.PASS, pcc=0.96, e2e_ms=2.2), lease="w1/a"),  # lower than stored
        r.finish_op(_record(vectors[10], 1, status.PASS, pcc=0.98, e2e_ms=2.3), lease="w1/a"),  # not the lowest
        r.finish_op(_record(vectors[11], 1, status.FAIL_L1_OOM, message="out of L1: 1499136 B"), lease="stale"),
        r.unfinal_op(_record(vectors[1], 1, status.FAIL_ACCURACY, pcc=0.95, threshold=0.99, e2e_ms=3.5)),
        r.finish_op(_record(vectors[1], 2, status.PASS, pcc=0.995, e2e_ms=3.4)),  # its retry, settled in the batch
        r.unfinal_op(_record(vectors[13], 1, status.PASS, pcc=1.0)),  # not final: nothing moves
        r.release_op(RUN, ids[12], 1, "w1/a"),  # w2 holds it: its lease stays, its attempt number goes
        r.release_op(RUN, ids[7], 1, "w1/a"),  # its record is written (above): its attempt number stays
        # the INFRA attempt above freed its lease: this books it
        *r.unrun_ops(RUN, [(ids[7], msgpack.packb(vectors[7]))], {"status": status.EXPIRED}, "n300", backend="w1"),
    ], raises={ids[1].encode(): b"2"})  # fmt: skip
    write("the coordinator cancels whatever is idle", "coordinator", lambda r: r.unrun_ops(
        RUN, [(v["id"], msgpack.packb(v)) for v in vectors[:15]] + [(ids[22], None)],
        {"status": status.CANCELED, "message": "canceled by alice"}, "n300", backend="coordinator",
    ))  # fmt: skip
    write("late: final already", "w2", lambda r: [
        r.finish_op(_record(vectors[2], 1, status.PASS, worker="w2", pcc=1.0), lease="w2/b"),
        r.finish_op(_record(vectors[13], 1, status.FAIL_OP, worker="w2", message="bad"), lease="w2/b"),
        r.finish_op(_record(vectors[14], 1, status.PASS, worker="w2", pcc=0.9, e2e_ms=9.0), lease="w2/b"),
    ])  # fmt: skip
    on_both("leases lapse", lambda side: side.client.delete(keys.lease(RUN, ids[15]), keys.lease(RUN, ids[16])))
    claim("a vector's first claim", "w1/c", [ids[15], ids[16]])
    on_both("its lease lapses", lambda side: side.client.delete(keys.lease(RUN, ids[15]), keys.lease(RUN, ids[16])))
    claim("claimed again: the attempt before was lost", "w2/d", [ids[15], ids[16]],
          counts={ids[15].encode(): b"1", ids[16].encode(): b"1"})  # fmt: skip
    write("the lost attempt's record comes after all, then the newer one's", "w1", lambda r: [
        r.finish_op(_record(vectors[15], 1, status.PASS, pcc=0.9991, e2e_ms=1.0), lease="w1/c"),
        r.finish_op(_record(vectors[15], 2, status.FAIL_ACCURACY, worker="w2", pcc=0.5, e2e_ms=1.1), lease="w2/d"),
        r.release_op(RUN, ids[16], 2, "w2/d"),  # given back: attempt 2 is undone, its lease freed
        r.release_op(RUN, ids[16], 2, "w2/d"),  # resent: attempt 1 stays
    ])  # fmt: skip
    on_both("its lease lapses again", lambda side: side.client.delete(keys.lease(RUN, ids[16])))
    claim("lost twice (attempt 1 counted again: its release left no record): dead", "w1/e", [ids[16]], max_lost=1)
    invalid = [(v["id"], v.get("config_hash"), f"shard needs {n * 4096} B") for n, v in enumerate(vectors[17:22])]
    template = _record(vectors[17], 0, status.INVALID, message="shard needs 1 B")  # one op and machine for all
    write("host validation in bulk, resent, with a vector finished first in the same batch", "coordinator", lambda r: [
        r.finish_op(_record(vectors[19], 1, status.PASS, pcc=0.9999, e2e_ms=1.5)),
        r.finish_unrun_op(template, invalid),
        r.finish_unrun_op(template, invalid),
        r.unfinal_op({**template, "vector": ids[18], "message": invalid[1][2]}),
        r.finish_unrun_op({**template, "status": status.NOT_RUN}, [invalid[1]]),  # its attempt 0 has its record
    ], raises={ids[19].encode(): b"1"})  # fmt: skip
    on_both("the run is canceled", lambda side: side.client.hset(keys.run(RUN), "state", "canceled"))
    claim("after the cancel", "w2/f", [ids[24], ids[25], ids[0]])
    steps.append(("renew: held, taken over, gone, twice", lambda side: side.results["w2"].renew(
        [(keys.lease(RUN, ids[12]), "w2/b"), (keys.lease(RUN, ids[13]), "w1/a"), (keys.lease(RUN, ids[15]), "w2/d"),
         (keys.lease(RUN, ids[12]), "w2/b"), (keys.lease(RUN, ids[24]), "x")], 60)))  # fmt: skip

    reference, batched = sides
    for what, act in steps:
        assert act(batched) == act(reference), what
        assert _state(batched.client) == _expected(reference.client, keys, lost, raised), what
    assert lost and raised  # the sequence reached both changed rules
    agg = _state(batched.client)[keys.agg(RUN).encode()]
    # the sequence reached what it is meant to exercise (a change to it must keep these)
    assert agg[b"s|FAIL_ACCURACY"] == b"1" and agg[b"s|PASS"] == b"10" and agg[b"pmin|ttnn.mul"] == b"0.95"
    assert agg[b"s|CANCELED"] == b"1" and agg[b"s|EXPIRED"] == b"1" and agg[b"s|INVALID"] == b"3"
    assert b"s|NOT_RUN" not in agg
    assert agg[b"ph|ttnn.mul|13"] == b"0" and len([k for k in agg if k.startswith(b"st|")]) == 8


def test_a_retried_vector_lost_once_runs_again_where_the_reference_gave_it_up(sides):
    """The rule the claim changed: the oracle ended a vector lost once at an attempt number of
    max_lost (after a retry or a crash retry); the product counts lost attempts. Until that loss both
    sides agree; then the oracle says DEAD and the product starts attempt 3; a second loss ends it."""
    vectors = _vectors(2)
    retried, crashed = vectors[0], vectors[1]
    ids = [v["id"] for v in vectors]
    reference, batched = sides
    keys = batched.keys

    def both(act) -> list:
        replies = [act(side) for side in sides]
        assert _state(batched.client) == _state(reference.client)
        return replies

    def claim(value: str) -> list:
        def act(side: _Side) -> list:
            return [(c.action, c.attempt, c.lost) for c in side.results[value[:2]].claim_as(value, RUN, ids, 30, 2)]

        return both(act)

    def lapse(side: _Side) -> None:
        side.client.delete(*(keys.lease(RUN, vid) for vid in ids))

    both(lambda side: side.client.hset(keys.vectors(RUN), mapping={v["id"]: msgpack.packb(v) for v in vectors}))
    assert claim("w1/a") == [[("R", 1, False)] * 2] * 2
    first = _record(retried, 1, status.PASS, pcc=1.0, e2e_ms=1.0)
    ops = [sides[0].results["w1"].finish_op(first, lease="w1/a"),  # then `sweepctl retry` takes its final out
           sides[0].results["w1"].finish_op(_record(crashed, 1, status.CRASH, message="SIGSEGV"), final=False,
                                            lease="w1/a"),  # its crash retry is attempt 2
           sides[0].results["coordinator"].unfinal_op(first)]  # fmt: skip
    both(lambda side: side.results["w1"].write(RUN, ops))
    assert claim("w1/b") == [[("R", 2, False)] * 2] * 2
    both(lapse)  # attempt 2's worker died in it: its first lost attempt
    product = batched.results["w2"].claim_as("w2/c", RUN, ids, 30, 2)
    oracle = reference.results["w2"].claim_as("w2/c", RUN, ids, 30, 2)
    assert [(c.action, c.attempt, c.lost) for c in oracle] == [("D", 2, True)] * 2  # given up at its first loss
    assert [(c.action, c.attempt, c.lost) for c in product] == [("R", 3, True)] * 2  # runs again
    assert batched.client.hgetall(keys.lost(RUN)) == {vid.encode(): b"1" for vid in ids}
    assert batched.client.hmget(keys.attempts(RUN), ids) == [b"3", b"3"]
    assert batched.client.mget([keys.lease(RUN, vid) for vid in ids]) == [b"w2/c", b"w2/c"]
    lapse(batched)  # and attempt 3's: the second lost attempt ends it
    assert [(c.action, c.attempt, c.lost) for c in batched.results["w1"].claim(RUN, ids)] == [("D", 3, True)] * 2
    assert batched.client.hgetall(keys.lost(RUN)) == {vid.encode(): b"1" for vid in ids}  # a DEAD writes nothing


def test_a_batch_larger_than_one_command_takes_leaves_what_the_reference_scripts_leave(sides):
    """Thousands of fields and keys in one call: the reads and writes go in slices, with the same result."""
    vectors = _vectors(1500)
    letters = [chr(65 + i % 26) + chr(65 + i // 26 % 26) for i in range(len(vectors))]  # 676 signatures
    results = sides[0].results["w1"]
    ops = [results.finish_op(_record(v, 1, status.FAIL_OP, message=f"no kernel for {x}"), lease="w1/a")
           for v, x in zip(vectors[:1200], letters[:1200], strict=True)]  # fmt: skip
    unrun = [(v["id"], v.get("config_hash"), "") for v in vectors]
    ops.append(results.finish_unrun_op(_record(vectors[1200], 0, status.NOT_RUN), unrun, idle_only=True))
    for side in sides:
        side.client.mset({side.keys.lease(RUN, v["id"]): "w1/a" for v in vectors[:1300]})
    replies = [side.results["w1"].write(RUN, ops) for side in sides]
    assert replies[0] == replies[1] == [0, 200]
    raised = {v["id"].encode(): b"1" for v in vectors[:1200]}  # finished with no claim: their counters go to 1
    assert _state(sides[1].client) == _expected(sides[0].client, sides[0].keys, {}, raised)
    assert len(_state(sides[1].client)[sides[1].keys.agg(RUN).encode()]) > 2 * 676  # more than one HSET's worth


BREAKAGES = ("a counter that is not a number", "a failed hash that is not a hash", "an ACL that refuses the agg write")


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_write_that_fails_leaves_nothing_written(redis_server, breakage):
    """Where the one-command-per-field script left the record and some counters written, a batched
    write fails before its first write: nothing half-counted, and a resend once fixed counts it all."""
    admin = redis.Redis.from_url(redis_server)
    keys = Keys("broken")
    vectors = _vectors(3)
    admin.hset(keys.vectors(RUN), mapping={v["id"]: b"payload" for v in vectors})
    client = admin
    if breakage == BREAKAGES[0]:
        admin.hset(keys.agg(RUN), "s|FAIL_OP", "many")
    elif breakage == BREAKAGES[1]:
        admin.set(keys.failed(RUN), "not a hash")
    else:  # a worker user whose ACL lacks HSET on agg, the last write the script makes
        admin.execute_command("ACL", "SETUSER", "narrow", "on", ">pw", "~*", "&*", "+@all", "-hset",
                              f"(~{keys.failed(RUN)} ~{keys.attempts(RUN)} +hset)")  # fmt: skip
        client = redis.Redis.from_url(redis_server.replace("redis://", "redis://narrow:pw@"))
    results = Results(client, keys, worker="w1")
    claims = results.claim(RUN, [v["id"] for v in vectors])
    ops = [results.finish_op(_record(v, c.attempt, status.FAIL_OP, message="bad"), lease=c.lease)
           for v, c in zip(vectors, claims, strict=True)]  # fmt: skip
    before = _state(admin)
    with pytest.raises(redis.exceptions.ResponseError, match="not an integer|WRONGTYPE|may not run HSET"):
        results.write(RUN, ops)
    assert _state(admin) == before  # no record, final, failed entry or counter; the leases still held
    if breakage == BREAKAGES[0]:
        admin.hdel(keys.agg(RUN), "s|FAIL_OP")
    elif breakage == BREAKAGES[1]:
        admin.delete(keys.failed(RUN))
    else:
        admin.acl_deluser("narrow")
        results = Results(admin, keys, worker="w1")
    assert results.write(RUN, ops) == [0, 0]
    agg = admin.hgetall(keys.agg(RUN))
    assert agg[b"done"] == agg[b"s|FAIL_OP"] == b"3" and admin.hlen(keys.failed(RUN)) == 3


def test_a_batch_costs_two_commands_per_vector_and_a_few_per_call(redis_server):
    """A write of k finishes runs 2 per vector (its record, its final: HSETNX each, as the ACL
    requires) and a few per call; a claim of k, one per vector (its lease) and a few per call."""
    client = redis.Redis.from_url(redis_server)
    keys = Keys("cost")
    vectors = _vectors(12)
    client.hset(keys.vectors(RUN), mapping={v["id"]: b"payload" for v in vectors})
    results = Results(client, keys, worker="w1")

    def commands(act) -> int:
        client.config_resetstat()
        act()
        stats = client.info("commandstats")  # the scripts' own commands, not the calls that ran them
        return sum(v["calls"] for k, v in stats.items() if k.split("|")[0] not in ("cmdstat_evalsha", "cmdstat_config",
                                                                                 "cmdstat_script"))  # fmt: skip

    claims = []
    assert commands(lambda: claims.extend(results.claim(RUN, [v["id"] for v in vectors]))) <= 12 + 6
    ops = [results.finish_op(_record(v, 1, status.PASS, pcc=1.0, e2e_ms=4.0), lease=c.lease)
           for v, c in zip(vectors, claims, strict=True)]  # fmt: skip
    assert commands(lambda: results.write(RUN, ops)) <= 2 * 12 + 7
    assert client.hget(keys.agg(RUN), "done") == b"12" and not client.keys(keys.lease(RUN, "*"))
