"""ERROR, sweepctl's own failure, end to end: classified in the worker (only the op call is the op's),
never retried by the daemon, listed first by the report, which exits 1 on it; a JUnit <error>, an
OpTest "error"; compare shows a new ERROR signature without calling it a regression of the op.

Real parts: ttnn host functions under the mock cluster (in a child process), a real redis-server,
a real emulated worker (Celery solo worker and its executor), the real `sweepctl` commands. The two
test-only ops `prepare_error` and `golden_error` run through the real emulated backend and fail in
sweepctl's own code: building inputs (an index slot naming a tensor the vector lacks, embedding's
`KeyError: 'weight'` of issue 14) and a golden handed more positional args than it takes (reshape's).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import msgpack
import pytest
import redis

from broker.app import make_app
from broker.coordinator import Plan, publish
from broker.keys import Keys
from broker.reports.export import to_junit
from broker.reports.rows import Row
from broker.results import parse_final
from sweeps import status
from sweeps.nightly import DRAM, tensor
from sweeps.profiles import get_profile
from sweeps.suites import Expansion, Selection
from sweeps.vector import make_vector
from tests.conftest import ROOT, cli, emulated_worker, running_redis

PREFIX = "errors"
FRAME = re.compile(r" \[((?:tracer|sweeps|broker|workers)/[\w/]+\.py):(\d+) in (\w+)\]$")


def _source_line(path: str, line: int) -> str:
    return (ROOT / path).read_text().splitlines()[line - 1]


# --- the classification, with real ttnn host functions ---------------------------------------

CHILD = """
import contextlib, json, sys
with contextlib.redirect_stdout(sys.stderr):
    import ttnn
import torch
from sweeps.catalogue import lookup
from sweeps.materialize import quantize
from sweeps.nightly import DRAM, tensor
from sweeps.vector import make_vector
from workers.emulated import EmulatedBackend
from workers.outcome import judged, op_call, verdict

host = ttnn.from_torch(torch.randn(1, 1, 32, 32), dtype=ttnn.bfloat16, layout=ttnn.TILE_LAYOUT)

def reshaped(shape, dtype="BFLOAT16"):
    # the device backend's order: build inputs (ours), the op call (the op's), read back and compare (ours)
    def run():
        data = quantize(ttnn, torch.randn(1, 1, 32, 32), dtype)
        with op_call():
            out = ttnn.reshape(host, shape)
        return verdict(torch.zeros(32, 32) + data.sum(), ttnn.to_torch(out).float(), 0.999, 0.0)
    return judged(run)

def read_back_fails():
    def run():
        with op_call():
            out = ttnn.reshape(host, [32, 32])
        return verdict(torch.zeros(32, 32), ttnn.to_torch(out, mesh_composer=object()), 0.999, 0.0)
    return judged(run)

a = tensor([1, 1, 32, 32], "BFLOAT16", DRAM)
backend = EmulatedBackend(ttnn, "n300")
emulated = {
    name: backend.run(lookup("sweepctl.test." + name), make_vector("sweepctl.test." + name, "t", "n300", [1, 2],
                                                                   inputs, {}, 30.0))
    for name, inputs in (("golden_error", [a, 1, 2]), ("prepare_error", [a]))
}
print("RESULT", json.dumps({
    "op_raises": reshaped([7, 7]),
    "input_conversion_raises": reshaped([32, 32], dtype="NOT_A_DTYPE"),
    "read_back_raises": read_back_fails(),
    **emulated,
}))
"""


@pytest.fixture(scope="module")
def classified() -> dict:
    env = {**os.environ, "SWEEPCTL_ENABLE_TEST_OPS": "1",
           "TT_METAL_MOCK_CLUSTER_DESC_PATH": get_profile("n300").mock_cluster_path}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (line,) = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]  # ttnn logs to stdout too
    return json.loads(line[len("RESULT ") :])


def test_an_exception_of_the_op_call_is_the_ops_failure_anything_else_is_error(classified):
    op = classified["op_raises"]  # ttnn's TT_FATAL from the op call itself
    assert op["status"] == status.FAIL_OP and op["message"] == "RuntimeError: Invalid arguments to reshape"
    conversion = classified["input_conversion_raises"]  # building the op's inputs failed: ours
    assert conversion["status"] == status.ERROR and conversion["message"].startswith("KeyError: 'NOT_A_DTYPE' [")
    path, line, function = FRAME.search(conversion["message"]).groups()
    assert (path, function) == ("sweeps/materialize.py", "quantize")
    assert "ttnn.DataType[dtype]" in _source_line(path, int(line))  # the innermost frame of our code, exactly
    read_back = classified["read_back_raises"]  # the op ran; reading its output back failed: ours
    assert read_back["status"] == status.ERROR and read_back["message"].startswith("TypeError: ")
    assert FRAME.search(read_back["message"]).group(1) == "workers/outcome.py"  # the test's lambda is not ours


def test_on_the_emulated_backend_a_golden_that_cannot_take_the_call_is_error(classified):
    golden = classified["golden_error"]
    assert golden["status"] == status.ERROR and golden["pcc"] is None
    assert golden["message"].startswith("TypeError: _takes_two() takes 2 positional arguments but 3 were given [")
    path, line, function = FRAME.search(golden["message"]).groups()
    assert (path, function) == ("sweeps/catalogue.py", "_golden_rejects_call")
    assert "_takes_two(*args)" in _source_line(path, int(line))
    prepare = classified["prepare_error"]
    assert prepare["status"] == status.ERROR and prepare["message"].startswith("KeyError: 'weight' [")
    path, line, function = FRAME.search(prepare["message"]).groups()
    assert (path, function) == ("sweeps/materialize.py", "generate")


# --- JUnit stays XML, whatever the message holds ---------------------------------------------


def test_junit_is_parseable_with_nul_esc_and_ansi_in_messages_and_error_is_an_error_element():
    message = "\x1b[1;31mTT_FATAL\x1b[0m @ op.cpp:12: bad\x00 value\x1b\x07 \ufffe end"
    vector = make_vector("ttnn.add", "model_traced", "n300", [1, 2], [1], {}, 30.0, config_hash="c\x00h")
    rows = [
        Row(vector, status.FAIL_OP, None, None, "s1", {"message": message, "backend": "emulated"}),
        Row({**vector, "id": "e" * 32}, status.ERROR, None, None, "s2", {"message": "KeyError: 'weight'\x00"}),
    ]
    root = ET.fromstring(to_junit("run", rows))  # raised "not well-formed" before
    (failure,) = root.iter("failure")
    assert failure.get("message") == failure.text == "TT_FATAL @ op.cpp:12: bad\\x00 value\\x1b\\x07 \\ufffe end"
    (error,) = root.iter("error")
    assert error.get("type") == status.ERROR and error.text == "KeyError: 'weight'\\x00"
    assert root.get("errors") == "1" and root.get("failures") == "1"
    assert all("\x00" not in case.get("name") for case in root.iter("testcase"))


# --- a real run ------------------------------------------------------------------------------


def _vector(op: str, n: int, config_hash: str, inputs: list | None = None) -> dict:
    return make_vector(f"sweepctl.test.{op}", "model_traced", "n300", [1, 2], inputs or [n], {}, 30.0,
                       config_hash=config_hash, sources=["models/demo.py [HF_MODEL:org/model]"])  # fmt: skip


A = tensor([1, 1, 32, 32], "BFLOAT16", DRAM)
BASE = [_vector("noop", 1, "cfg-x"), _vector("noop", 2, "cfg-y")]
RUN = [
    _vector("golden_error", 1, "cfg-x", [A, 1, 2]),  # passed in the base; now our golden cannot take it
    _vector("prepare_error", 3, "cfg-z", [A]),
    _vector("noop", 2, "cfg-y"),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("errors")
    resets = tmp / "resets.log"
    with running_redis(tmp) as url:
        client, keys = redis.Redis.from_url(url), Keys(PREFIX)
        with emulated_worker(url, PREFIX, "w-errors", tmp, SWEEPCTL_RESET_COMMAND=f"sh -c 'echo reset >> {resets}'"):
            app = make_app(url, keys)
            for run_id, vectors in (("base", BASE), ("run", RUN)):
                publish(app, client, keys, Plan(run_id, Selection(), Expansion.of(vectors), {}), chunk=3)
            deadline = time.monotonic() + 240
            while client.hlen(keys.final("base")) < 2 or client.hlen(keys.final("run")) < 3:
                if time.monotonic() > deadline:
                    pytest.fail("the runs did not finish: " + (tmp / "worker.log").read_text()[-3000:])
                time.sleep(0.2)
            yield url, client, keys, tmp, resets


def sweepctl(url: str, *args: str) -> subprocess.CompletedProcess:
    return cli(url, PREFIX, *args)


def _records(client, keys, run_id: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for payload in client.hvals(keys.records(run_id)):
        record = msgpack.unpackb(payload)
        out.setdefault(record["vector"], []).append(record)
    return out


def test_our_failures_are_error_once_with_their_frame_and_no_device_recovery(runs):
    url, client, keys, _, resets = runs
    finals = {k.decode(): parse_final(v)[0] for k, v in client.hgetall(keys.final("run")).items()}
    assert [finals[v["id"]] for v in RUN] == [status.ERROR, status.ERROR, status.PASS]
    records = _records(client, keys, "run")
    for vector in RUN[:2]:
        (record,) = records[vector["id"]]  # one attempt, not retried
        assert record["attempt"] == 1 and record["backend"] == "emulated" and FRAME.search(record["message"])
        assert int(client.hget(keys.attempts("run"), vector["id"])) == 1
    assert "_golden_rejects_call]" in records[RUN[0]["id"]][0]["message"]
    assert not resets.exists()  # never treated as a device fault: no reset, no health check
    assert client.hget(keys.worker("w-errors"), "health") == b"GOOD"


def test_report_lists_error_first_keeps_it_out_of_the_pass_rate_and_exits_1(runs):
    url, *_ = runs
    out = sweepctl(url, "report", "run", "--json")
    assert out.returncode == 1, out.stderr  # nothing executed failed: the ERRORs alone fail it
    report = json.loads(out.stdout)
    assert report["counts"] == {status.ERROR: 2, status.PASS: 1}
    assert report["executed"] == 1 and report["failed"] == 0 and report["pass_rate"] == 1.0
    assert report["errors"]["count"] == 2 and len(report["errors"]["buckets"]) == 2
    assert all(status.ERROR in b["statuses"] for b in report["buckets"][:2])
    assert all(FRAME.search(b["example_message"]) for b in report["errors"]["buckets"])
    assert report["failures"] == [] and report["failures_total"] == 0
    text = sweepctl(url, "report", "run").stdout.splitlines()
    heading = next(i for i, line in enumerate(text) if line.startswith("ERROR: 2 vectors failed in sweepctl"))
    ops_table = next(i for i, line in enumerate(text) if line.startswith("op "))
    assert heading < ops_table and "KeyError: 'weight' [sweeps/materialize.py:" in "\n".join(text[heading:ops_table])
    assert text[2].split() == ["ERROR", "2", "PASS", "1"]  # the counts line: ERROR first
    line = sweepctl(url, "status", "run").stdout
    assert line.rstrip().endswith("ERROR=2 PASS=1"), line  # watch and status: ERROR first too
    assert sweepctl(url, "report", "base").returncode == 0
    # no expectation hides an ERROR: an exclude of every op leaves it ERROR and the exit 1
    expectations = runs[3] / "exclude.yaml"
    ops = ("golden_error", "prepare_error", "noop")
    entries = "".join(f"  - op: sweepctl.test.{op}\n    status: exclude\n" for op in ops)
    expectations.write_text("schema: 1\nentries:\n" + entries)
    judged = sweepctl(url, "report", "run", "--expectations", str(expectations), "--json")
    assert judged.returncode == 1 and json.loads(judged.stdout)["expectations"]["counts"] == {
        status.ERROR: 2, "EXCLUDED": 1}  # fmt: skip


def test_exports_book_error_as_a_harness_error(runs):
    url, _, _, tmp, _ = runs
    junit = ET.fromstring(sweepctl(url, "report", "run", "--format", "junit").stdout)
    errors = list(junit.iter("error"))
    assert len(errors) == 2 and {e.get("type") for e in errors} == {status.ERROR}
    assert junit.get("errors") == "2" and junit.get("failures") == "0"
    rows = list(csv.DictReader(io.StringIO(sweepctl(url, "report", "run", "--format", "csv").stdout)))
    assert sorted(r["status"] for r in rows) == [status.ERROR, status.ERROR, status.PASS]
    assert sweepctl(url, "report", "run", "--format", "optest", "-o", str(tmp)).returncode == 1
    (path,) = tmp.glob("oprun_*.json")
    oprun = json.loads(path.read_text())
    errored = [t for t in oprun["tests"] if t["status"] == "error"]
    assert len(errored) == 2 and oprun["status"] == "fail"
    assert all(not t["success"] and not t["skipped"] and FRAME.search(t["exception"]) for t in errored)
    page = tmp / "report.html"
    assert sweepctl(url, "report", "run", "--format", "html", "-o", str(page)).returncode == 1
    html = page.read_text()
    assert html.index('id="errors"') < html.index("<h2>Status by machine")


def test_compare_shows_a_new_error_signature_without_calling_it_a_regression_of_the_op(runs):
    url, *_ = runs
    out = sweepctl(url, "report", "run", "--compare", "base", "--json")
    diff = json.loads(out.stdout)["compare"]
    assert diff["counts"]["newly_failing"] == 0 and not diff["regressed"]  # cfg-x PASS -> ERROR is not the op's
    assert diff["compared"] == 1 and diff["not_comparable"] == 1 and diff["only_in_run"] == 1
    assert diff["new_signatures"] == [] and len(diff["new_error_signatures"]) == 2 and diff["errors"] == 2
    assert out.returncode == 1  # the ERRORs still fail it
    text = sweepctl(url, "report", "run", "--compare", "base").stdout
    assert "new ERROR signatures (sweepctl's own failures, not a regression of the op):" in text
    assert "_takes_two() takes <n> positional arguments" in text and "REGRESSED" not in text
    assert sweepctl(url, "report", "base", "--compare", "base").returncode == 0


def test_retry_of_error_is_allowed_and_gives_one_new_attempt(runs):  # last: it changes the run
    url, client, keys, _, resets = runs
    out = sweepctl(url, "retry", "run", "--status", "ERROR", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["retried"] == 2
    deadline = time.monotonic() + 60
    while client.hlen(keys.records("run")) < 5 or client.hlen(keys.final("run")) < 3:
        assert time.monotonic() < deadline, "the retried vectors did not run"
        time.sleep(0.2)
    records = _records(client, keys, "run")
    for vector in RUN[:2]:  # the same sweepctl fails the same way: one more attempt each, no more
        assert sorted((r["attempt"], r["status"]) for r in records[vector["id"]]) == [(1, "ERROR"), (2, "ERROR")]
    assert not resets.exists()


def test_an_exception_without_a_message_is_error_naming_its_type():
    """An exception with no text (a bare `raise RuntimeError()`, `assert` outside pytest): our_error
    must still book it ERROR, not raise (in an executor that was a CRASH, twice)."""
    from workers.outcome import our_error

    out = our_error(RuntimeError())
    assert out["status"] == status.ERROR and out["message"] == "RuntimeError: "


def test_a_debugger_quit_inside_the_op_call_is_no_verdict():
    """`q` at a breakpoint inside the ttnn op call (the device backend's op_call) was booked FAIL_OP,
    blaming the op; outside it ERROR. Neither: the quit goes on up to `sweepctl run`."""
    import bdb

    from workers.outcome import judged, op_call

    def quit_in_the_op() -> dict:
        with op_call():
            raise bdb.BdbQuit

    def quit_in_the_golden() -> dict:
        raise bdb.BdbQuit

    for run in (quit_in_the_op, quit_in_the_golden):
        with pytest.raises(bdb.BdbQuit):
            judged(run)
    assert judged(lambda: {"status": status.PASS})["status"] == status.PASS
