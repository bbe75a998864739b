"""The runtime commands as a user types them: bad input is one line and exit 2, dry runs write
nothing, `ops` tells what is covered; the Celery app refuses pickle and routes by machine."""

from __future__ import annotations

import base64
import json

import msgpack
import pytest
import redis

from broker.app import RUN_CHUNK, PickleRefused, make_app, refuse_pickle, route_chunk
from broker.cli import main
from broker.coordinator import plan, publish
from broker.keys import Keys
from broker.reports.summary import progress
from sweeps.suites import Selection
from tests.conftest import ROOT
from tracer.errors import InputError

SAMPLE = str(ROOT / "sweeps" / "data" / "sample_master.json")


def _one_line_error(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err
    return err


def test_bad_input_is_one_line_and_exit_2(capsys, redis_server, monkeypatch):
    monkeypatch.delenv("SWEEPCTL_REDIS_URL", raising=False)
    monkeypatch.setenv("SWEEPCTL_HOME", str(ROOT / "nonexistent-home"))
    _one_line_error(capsys, ["enqueue", "--suite", "weekly", "--redis", redis_server], "unknown suite 'weekly'")
    _one_line_error(capsys, ["enqueue", "--machine", "n999", "--redis", redis_server], "unknown machine type")
    _one_line_error(capsys, ["enqueue", "--store", "missing.json", "--redis", redis_server], "no such master store")
    _one_line_error(
        capsys, ["enqueue", "--op", "pad", "--store", SAMPLE, "--redis", redis_server], "no traced configs of ttnn.pad"
    )
    _one_line_error(capsys, ["status", "--redis", "redis://127.0.0.1:1/0"], "does not answer")
    _one_line_error(capsys, ["report", "run-nope", "--redis", redis_server], "no such run")
    _one_line_error(capsys, ["workers"], "run `sweepctl up`")


@pytest.mark.slow
def test_dry_run_counts_per_machine_and_writes_nothing(capsys, redis_server):
    assert main(["enqueue", "--store", SAMPLE, "--dry-run", "--json", "--redis", redis_server, "--prefix", "dry"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["dry_run"] and plan["vectors"] == 33
    assert plan["per_machine"]["n300"] == {"queued": 14, "INVALID": 1}
    assert plan["per_machine"]["galaxy"] == {"queued": 18}
    client = redis.Redis.from_url(redis_server)
    keys = Keys("dry")
    assert client.zcard(keys.runs()) == 0 and not client.exists(keys.run(plan["run_id"]))
    # only the validation cache was written: the next enqueue does not pay for host validation again
    assert client.hlen(keys.validation("0.81.1", "n300")) > 0


def test_ops_lists_the_catalogue_and_the_store_ops_it_lacks(capsys):
    assert main(["ops", "--store", SAMPLE, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {row["op"]: row for row in data["ops"]}
    assert {"ttnn.add", "ttnn.matmul", "ttnn.all_gather", "ttnn.conv2d"} <= set(rows)
    assert data["store_ops_without_definition"] == []  # the sample's nlp_create_qkv_heads_decode has one now
    decode = rows["ttnn.experimental.nlp_create_qkv_heads_decode"]
    assert decode["family"] == "transformer" and decode["adapter"] is True and decode["golden"] == "sweeps.adapters"
    assert rows["ttnn.add"]["adapter"] is False and rows["ttnn.add"]["golden"] == "ttnn.get_golden_function"
    assert rows["ttnn.slice"]["requires"] == ["0|input_tensor|input", "1|slice_start|starts", "2|slice_end|ends"]
    assert main(["ops"]) == 0
    assert "ops covered" in capsys.readouterr().out


def test_the_app_is_msgpack_only_and_refuses_pickle():
    app = make_app("redis://127.0.0.1:1/0", Keys("x"))
    assert list(app.conf.accept_content) == ["msgpack"] and app.conf.task_acks_late
    assert app.conf.worker_disable_prefetch and app.conf.task_ignore_result and not app.conf.task_create_missing_queues
    app.conf.accept_content = ["msgpack", "pickle"]
    with pytest.raises(PickleRefused):
        refuse_pickle(app.conf)


def test_chunks_route_to_their_machines_queue():
    assert route_chunk(RUN_CHUNK, (), {"machine": "galaxy"}, {}) == {"queue": "sweeps.galaxy"}
    assert route_chunk("other.task", (), {}, {}) is None


def test_the_coordinator_and_the_celery_worker_never_import_ttnn_or_torch():
    import subprocess
    import sys

    code = (
        "import sys, broker.cli, broker.cli.commands, broker.coordinator, broker.lifecycle, workers.daemon; "
        "print(sorted(m for m in ('ttnn', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"  # only executors (and the validation child) load them


@pytest.mark.slow
def test_an_enqueue_of_a_run_another_enqueue_is_writing_is_refused(capsys, redis_server):
    client = redis.Redis.from_url(redis_server)
    keys = Keys("lock")
    argv = ["enqueue", "--store", SAMPLE, "--run-id", "r1", "--json", "--redis", redis_server, "--prefix", "lock"]
    client.set(keys.enqueuing("r1"), "another-process", ex=60)  # an enqueue of r1 still writing
    _one_line_error(capsys, argv, "another enqueue of this run is still writing it")
    assert not client.exists(keys.run("r1")) and not client.exists(keys.vectors("r1"))  # nothing written
    assert client.get(keys.enqueuing("r1")) == b"another-process"  # and its lock is not ours to free
    client.delete(keys.enqueuing("r1"))
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["new_run"] and first["added"] == 33 and not client.exists(keys.enqueuing("r1"))
    assert main(argv) == 0  # the same run id again: every vector is there already
    again = json.loads(capsys.readouterr().out)
    assert not again["new_run"] and again["added"] == 0 and again["already_in_run"] == 33
    assert client.hlen(keys.vectors("r1")) == 33 and progress(client, keys, "r1")["total"] == 33
    per_machine = {k: int(v) for k, v in client.hgetall(keys.run("r1")).items() if k.startswith(b"total|")}
    assert per_machine == {b"total|n300": 15, b"total|galaxy": 18}  # moved with the vectors, once each


def _queued_ids(client: redis.Redis, keys: Keys) -> list[str]:
    """The vector ids in every chunk message waiting in this prefix's machine queues (kombu's JSON
    envelope, Celery's msgpack body: [args, kwargs, embed])."""
    ids = []
    for queue in client.keys(keys.celery_prefix + "sweeps.*"):
        for raw in client.lrange(queue, 0, -1):
            envelope = json.loads(raw)
            ids += msgpack.unpackb(base64.b64decode(envelope["body"]))[1]["ids"]
    return ids


@pytest.mark.slow
def test_an_enqueue_that_died_before_queueing_is_finished_by_the_next_one(capsys, redis_server):
    client = redis.Redis.from_url(redis_server)
    keys = Keys("heal")
    the_plan = plan(SAMPLE, Selection(), client, keys, "r1")
    # the broker is gone when the chunks are sent: vectors stored, none queued, one line naming the run
    with pytest.raises(InputError, match="connection lost while enqueueing run r1 .*--run-id r1"):
        publish(make_app("redis://127.0.0.1:1/0", keys), client, keys, the_plan)
    assert client.hlen(keys.vectors("r1")) == 33 and client.hlen(keys.final("r1")) == 1  # the INVALID one
    assert not _queued_ids(client, keys)
    argv = ["enqueue", "--store", SAMPLE, "--run-id", "r1", "--json", "--redis", redis_server, "--prefix", "heal"]
    assert main(argv) == 0
    healed = json.loads(capsys.readouterr().out)
    assert healed["added"] == 0 and healed["already_in_run"] == 33 and healed["requeued"] == 32
    unfinished = set(client.hkeys(keys.vectors("r1"))) - set(client.hkeys(keys.final("r1")))
    unfinished = {i.decode() for i in unfinished}
    queued = _queued_ids(client, keys)
    assert sorted(queued) == sorted(unfinished) and len(queued) == 32  # each once, none of the final ones
    assert main(argv) == 0  # a clean enqueue left no marker: the next one queues nothing again
    assert json.loads(capsys.readouterr().out)["requeued"] == 0 and len(_queued_ids(client, keys)) == 32
