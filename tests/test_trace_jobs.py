"""Trace jobs in a real redis-server: claimed once, written once, a job whose worker died queued again
and recorded once; `store pull` merges each trace uid once, and two pulls at once lose neither."""

from __future__ import annotations

import json
import multiprocessing
import time

import pytest
import redis

from broker.app import make_app
from broker.keys import Keys
from broker.traces import jobs as tracejobs
from broker.traces.pull import pull
from sweeps.profiles import get_profile
from tests.conftest import cli
from tests.synth import synthetic_trace_result
from tracer.store import MasterStore

PREFIX = "tj"


def _job(uid: str, machine: str = "n300") -> tracejobs.Job:
    return tracejobs.Job(uid, "org/model", machine, "models/test_model.py::test_model", "/nowhere", 60.0)


def _queued(client: redis.Redis, keys: Keys, machine: str) -> int:
    return client.llen(f"{keys.celery_prefix}{get_profile(machine).queue}")


def test_a_job_whose_worker_died_is_queued_again_and_recorded_once(redis_server):
    client, keys = redis.Redis.from_url(redis_server), Keys(PREFIX)
    app = make_app(redis_server, keys)
    tracejobs.enqueue(app, client, keys, [_job("u1")])
    assert _queued(client, keys, "n300") == 1

    first = tracejobs.claim(client, keys, "u1", "w1", "w1#1", ttl=1)
    assert (first.action, first.attempt) == ("run", 1)
    assert tracejobs.claim(client, keys, "u1", "w2", "w2#1", ttl=1).action == "held"  # a redelivered copy
    assert tracejobs.requeue_lost(client, keys, app, grace=0) == []  # w1's lease still holds it

    time.sleep(1.2)  # w1 died: its lease lapses
    assert tracejobs.requeue_lost(client, keys, app, grace=0) == ["u1"]
    assert tracejobs.requeue_lost(client, keys, app, grace=0) == []  # queued again once, whoever asks
    assert _queued(client, keys, "n300") == 2

    second = tracejobs.claim(client, keys, "u1", "w2", "w2#1", ttl=30)
    assert (second.action, second.attempt) == ("run", 2)
    done = tracejobs.make_result(_job("u1"), "passed")
    assert tracejobs.finish(client, keys, "u1", done, second.lease)
    late = tracejobs.make_result(_job("u1"), "failed", "the first worker, back from the dead")
    assert not tracejobs.finish(client, keys, "u1", late, first.lease)  # written once
    assert tracejobs.result(client, keys, "u1")["outcome"] == "passed"
    assert tracejobs.claim(client, keys, "u1", "w3", "w3#1", ttl=30).action == "done"
    assert client.zcard(keys.traces_running()) == 0 and not client.exists(keys.trace_lease("u1"))


def test_a_job_lost_twice_is_not_run_a_third_time(redis_server):
    client, keys = redis.Redis.from_url(redis_server), Keys(PREFIX)
    app = make_app(redis_server, keys)
    tracejobs.enqueue(app, client, keys, [_job("u2")])
    for attempt in (1, 2):
        got = tracejobs.claim(client, keys, "u2", "w", f"w#{attempt}", ttl=1)
        assert (got.action, got.attempt) == ("run", attempt)
        client.delete(keys.trace_lease("u2"))  # its worker died
        assert tracejobs.requeue_lost(client, keys, app, grace=0) == ["u2"]
    assert tracejobs.claim(client, keys, "u2", "w", "w#3", ttl=1).action == "dead"


def _store_result(client: redis.Redis, keys: Keys, result: dict) -> None:
    """A finished job as a worker leaves it (recorded, claimed, result written), without a queue."""
    uid = result["uid"]
    client.hset(keys.trace(uid), mapping={"model": result["model"], "machine": result["machine"], "state": "queued"})
    client.zadd(keys.traces(), {uid: time.time()})
    got = tracejobs.claim(client, keys, uid, "w", "w#1", ttl=30)
    assert tracejobs.finish(client, keys, uid, result, got.lease)


def test_pull_merges_each_trace_once_and_only_passed_tests_configs(redis_server, tmp_path):
    client, keys = redis.Redis.from_url(redis_server), Keys(PREFIX)
    store = tmp_path / "master.json"
    _store_result(client, keys, synthetic_trace_result(50, "a"))
    failed = {**synthetic_trace_result(0, "b"), "outcome": "failed"}
    _store_result(client, keys, failed)
    out = pull(client, keys, str(store))
    assert [t["uid"] for t in out.traces] == ["a", "b"] and out.summary.as_dict()["new_configs"] == 50
    loaded = MasterStore.load(str(store))
    assert loaded.merged_traces == {"a", "b"} and len(loaded) == 50
    before = store.read_bytes()
    again = pull(client, keys, str(store))
    assert again.traces == [] and again.already == 2 and store.read_bytes() == before
    assert json.loads(client.hget(keys.trace("a"), "merged"))["new"] == 50

    text = cli(redis_server, PREFIX, "store", "pull", str(store))  # the CLI says it too
    assert text.returncode == 0 and "merged 0 trace results (2 merged before)" in text.stdout


def _pull_one(url: str, store: str, uid: str) -> None:
    pull(redis.Redis.from_url(url), Keys(PREFIX), store, [uid])


def test_two_pulls_at_once_into_one_store_lose_neither(redis_server, tmp_path):
    client, keys = redis.Redis.from_url(redis_server), Keys(PREFIX)
    store = str(tmp_path / "master.json")
    _store_result(client, keys, synthetic_trace_result(3000, "x", seed=1))
    _store_result(client, keys, {**synthetic_trace_result(3000, "y", seed=2), "machine": "t3k"})
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_pull_one, args=(redis_server, store, uid)) for uid in ("x", "y")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    merged = MasterStore.load(store)
    assert merged.merged_traces == {"x", "y"}
    uids = {run["trace_uid"] for _, config in merged.entries() for run in config["executions"]}
    assert uids == {"x", "y"}


@pytest.mark.parametrize("case", ["unknown model", "unknown machine", "uncollectable"])
def test_bad_trace_input_is_one_line_and_queues_nothing(redis_server, tmp_path, case):
    (tmp_path / "test_m.py").write_text("def test_ok():\n    pass\n", encoding="utf-8")
    test = "test_m.py::test_missing" if case == "uncollectable" else "test_m.py::test_ok"
    machine = "n301" if case == "unknown machine" else "n300"
    models = tmp_path / "models.yaml"
    models.write_text(f"root: .\nmodels:\n  - name: m\n    test: {test}\n    machines: [{machine}]\n", encoding="utf-8")
    which = ["--model", "other"] if case == "unknown model" else ["--all"]
    proc = cli(redis_server, PREFIX, "trace", *which, "--models", str(models))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert {"unknown model": "other", "unknown machine": "n301", "uncollectable": "test_missing"}[case] in proc.stderr
    if case != "unknown model":
        assert f"{models}:3" in proc.stderr  # file:line of the entry
    assert redis.Redis.from_url(redis_server).zcard(Keys(PREFIX).traces()) == 0


def test_status_says_what_each_trace_added_and_whether_a_run_since_covers_it(redis_server, tmp_path):
    from broker.traces.status import model_status
    from sweeps.vector import make_vector, payload
    from tracer.registry import load

    client, keys = redis.Redis.from_url(redis_server), Keys(PREFIX)
    store = tmp_path / "master.json"
    _store_result(client, keys, synthetic_trace_result(5, "s1", model="org/model"))
    pull(client, keys, str(store))
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  - name: org/model\n    test: t.py\n    machines: [n300, t3k]\n", encoding="utf-8")
    registry, merged = load(str(models)), MasterStore.load(str(store))

    def rows() -> dict[str, dict]:
        return {r["machine"]: r for r in model_status(client, keys, registry, merged)}

    before = rows()
    assert before["t3k"]["state"] == "never"
    assert before["n300"]["outcome"] == "passed" and before["n300"]["merged"]["new"] == 5
    assert before["n300"]["swept"] == {"configs": 5, "covered": 0}
    hashes = sorted(c["config_hash"] for _, c in merged.entries())
    run = "r-after"  # a sweep run made after the trace, holding three of its configs on n300 (one on t3k)
    on = [("n300", hashes[0]), ("n300", hashes[1]), ("n300", hashes[2]), ("t3k", hashes[3])]
    vectors = [make_vector("ttnn.add", "model_traced", m, [1, 2], [], {"k": i}, 30.0, config_hash=h)
               for i, (m, h) in enumerate(on)]  # fmt: skip
    client.hset(keys.vectors(run), mapping={v["id"]: payload(v) for v in vectors})
    client.zadd(keys.runs(), {run: time.time()})
    assert rows()["n300"]["swept"] == {"configs": 5, "covered": 3}
