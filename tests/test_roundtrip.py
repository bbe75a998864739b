"""Round trip with tt-metal, checked against tt-metal's own rules (tests/ttmetal.py, written from
its code) and its data models (tests/ttmetal_models.py): both config_hash versions, trace
metadata, one config per argument set, the dialect stores are written in, and the OpRun/OpTest
exports of real runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter

import pytest
import redis

from broker.cli import main
from broker.reports.export import generated_vector, to_optest
from broker.reports.rows import PENDING, Row
from sweeps import status
from sweeps.index import build
from sweeps.nightly import DRAM, tensor
from sweeps.suites import Expansion, Selection, model_traced
from sweeps.vector import make_vector
from tests import ttmetal
from tests.conftest import (
    ADD_SWEEP,
    DEEPSEEK,
    GALAXY_TRACE,
    MINI,
    ROOT,
    SAMPLE,
    TRACER_EXAMPLES,
    deepcopy,
    emulated_worker,
    running_redis,
    write_json,
)
from tests.ttmetal_models import OpRun
from tracer.confighash import config_hash
from tracer.master import load_json
from tracer.opnames import canonical_op_name
from tracer.store import MasterStore, read_inputs

GALAXY = {"board_type": "Wormhole", "device_series": "tt-galaxy-wh", "card_count": 32, "device_count": 32}
N300 = {"board_type": "Wormhole", "device_series": "n300", "card_count": 1, "device_count": 2}
N150 = {"board_type": "Wormhole", "device_series": "n150", "card_count": 1, "device_count": 1}


def _import(tmp_path, *inputs, name: str = "store.json") -> tuple[dict, str]:
    path = tmp_path / name
    assert main(["store", "import", *map(str, inputs), "--into", str(path), "--json"]) == 0
    return load_json(str(path)), str(path)


def _verify(path: str, capsys) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["store", "verify", path, "--json"])
    return code, json.loads(capsys.readouterr().out)


def _with_metadata(tmp_path, source_dir, name: str, **meta) -> str:
    """A copy of a trace directory with the _trace_metadata.json tt-metal's tracer writes."""
    directory = tmp_path / name
    shutil.copytree(source_dir, directory)
    (directory / "_trace_metadata.json").unlink(missing_ok=True)
    doc = {"test_source": "tests/model.py", "timestamp": "2026-03-08T15:20:13", "trace_uid": f"uid-{name}",
           "machine_info": None, "trace_count": 0, **meta}  # fmt: skip
    write_json(directory / "_trace_metadata.json", doc)
    return str(directory)


# --- config_hash: both versions ------------------------------------------------------------------


def test_verify_accepts_both_versions_and_counts_them(tmp_path, capsys):
    code, report = _verify(str(DEEPSEEK), capsys)
    assert code == 0 and report["versions"] == {"current": 0, "legacy": 338} and report["stale"] == []
    # a store tt-metal's current tracer writes (its --load, read from its code) holds current hashes
    written = write_json(tmp_path / "ttmetal.json", ttmetal.master_from_trace_dir(str(GALAXY_TRACE)))
    code, report = _verify(str(written), capsys)
    assert code == 0 and report["versions"] == {"current": 4, "legacy": 0}, report
    # so does the store sweepctl writes from the same trace, with the same hashes
    ours, path = _import(tmp_path, GALAXY_TRACE)
    code, report = _verify(path, capsys)
    assert code == 0 and report["versions"] == {"current": 4, "legacy": 0}
    theirs = load_json(str(written))
    assert {c["config_hash"] for b in ours["operations"].values() for c in b["configurations"]} == {
        c["config_hash"] for b in theirs["operations"].values() for c in b["configurations"]
    }
    capsys.readouterr()
    assert main(["store", "verify", path]) == 0
    assert (
        "4 carry the current config_hash, 0 the legacy (unnormalised) one, 0 neither (stale)" in capsys.readouterr().out
    )


def test_a_stored_hash_neither_version_makes_is_stale_and_exits_1(tmp_path, capsys):
    data = load_json(str(ADD_SWEEP))
    data["operations"]["ttnn.add"]["configurations"][0]["config_hash"] = "0" * 64
    code, report = _verify(str(write_json(tmp_path / "bad.json", data)), capsys)
    assert code == 1 and report["versions"] == {"current": 0, "legacy": 17} and len(report["stale"]) == 1


def test_a_merge_finds_a_config_whatever_version_its_hash_is(tmp_path):
    """The DeepSeek store as tt-metal's recompute_config_hashes rewrites it (current hashes) merged into
    the original (legacy hashes): every config is known, nothing is added, the stored hash stays."""
    original = load_json(str(DEEPSEEK))
    recomputed = deepcopy(original)
    for op, body in recomputed["operations"].items():
        for config in body["configurations"]:
            config["config_hash"] = ttmetal.config_hash(
                op, config["arguments"], config["executions"][0]["machine_info"]
            )
            for run in config["executions"]:
                run["trace_uid"] = "recomputed"
    current = {c["config_hash"] for b in recomputed["operations"].values() for c in b["configurations"]}
    assert len(current) == 323  # 338 argument sets, 15 pairs differ only in what normalisation drops
    store = MasterStore()
    assert store.merge(read_inputs([str(DEEPSEEK)])).as_dict()["new_configs"] == 338
    again = store.merge(read_inputs([str(write_json(tmp_path / "re.json", recomputed))])).as_dict()
    assert (again["new_configs"], again["known_configs"]) == (0, 338) and len(store) == 338
    legacy = {c["config_hash"] for b in original["operations"].values() for c in b["configurations"]}
    assert {e["config_hash"] for _, e in store.entries()} == legacy
    assert store.hash_versions()["versions"] == {"current": 0, "legacy": 338}
    # and the other way round: the recomputed store keeps its current hashes
    other = MasterStore()
    other.merge(read_inputs([str(tmp_path / "re.json"), str(DEEPSEEK)]))
    assert len(other) == 338 and other.hash_versions()["versions"] == {"current": 338, "legacy": 0}


# --- trace directories ---------------------------------------------------------------------------


def test_trace_metadata_gives_source_machine_and_trace_uid(tmp_path, monkeypatch):
    store, _ = _import(tmp_path, GALAXY_TRACE)
    meta = load_json(str(GALAXY_TRACE / "_trace_metadata.json"))
    assert store["metadata"]["trace_uid"] == meta["trace_uid"]
    runs = [r for b in store["operations"].values() for c in b["configurations"] for r in c["executions"]]
    assert {r["source"] for r in runs} == {"models/demos/deepseek_v3/demo/demo.py"}
    assert {r["trace_uid"] for r in runs} == {meta["trace_uid"]}
    assert all(r["machine_info"]["device_series"] == "tt-galaxy-wh" for r in runs)
    assert all(r["machine_info"]["mesh_device_shape"] == [4, 8] for r in runs)  # the traced mesh joins it
    gather = store["operations"]["ttnn.experimental.all_gather_async"]["configurations"]
    assert len(gather) == 1 and gather[0]["executions"][0]["count"] == 2  # two calls: only addresses differed
    args = gather[0]["arguments"]
    assert "multi_device_global_semaphore" not in args and "barrier_semaphore" not in args
    assert args["subdevice_id"]["value"] == "<ttnn._ttnn.device.SubDeviceId object>"
    (pad,) = store["operations"]["ttnn.pad"]["configurations"]
    assert pad["arguments"]["value"] == "-inf"
    assert pad["arguments"]["arg0"]["memory_config"]["shard_spec"] is None
    (add,) = store["operations"]["ttnn.add"]["configurations"]
    assert add["arguments"]["arg0"]["values"] == [[[[0.5, 0.25, -1.0, 2.0], [0.125, 3.0, -0.5, 1.5]]]]
    assert add["arguments"]["arg0"]["dtype"] == "float32"  # the host dtype the values were traced in
    # HF_MODEL is appended, an absolute source inside $TT_METAL_HOME is made relative
    monkeypatch.setenv("TT_METAL_HOME", "/home/ci/tt-metal")
    tagged = _with_metadata(tmp_path, GALAXY_TRACE, "tagged", test_source="/home/ci/tt-metal/models/x/demo.py",
                            HF_MODEL="deepseek-ai/DeepSeek-V3", machine_info=GALAXY)  # fmt: skip
    entries = read_inputs([tagged])
    assert {e.executions[0]["source"] for e in entries} == {"models/x/demo.py [HF_MODEL:deepseek-ai/DeepSeek-V3]"}


def test_without_metadata_tt_metals_defaults_apply(tmp_path):
    entries = read_inputs([str(TRACER_EXAMPLES)])
    assert {e.executions[0]["source"] for e in entries} == {"operation_tracer_examples"}
    assert all("machine_info" not in e.executions[0] for e in entries)  # no tt-smi on this host


# --- one config per argument set -----------------------------------------------------------------


def test_one_argument_set_on_two_machines_is_one_config_with_a_vector_per_machine(tmp_path):
    on_n300 = _with_metadata(tmp_path, TRACER_EXAMPLES, "n300", machine_info=N300)
    on_n150 = _with_metadata(tmp_path, TRACER_EXAMPLES, "n150", machine_info=N150)
    store = MasterStore()
    first = store.merge(read_inputs([on_n300])).as_dict()
    second = store.merge(read_inputs([on_n150])).as_dict()
    assert (first["new_configs"], second["new_configs"], second["known_configs"]) == (2, 0, 2)
    assert len(store) == 2
    for op, entry in store.entries():
        machines = [run["machine_info"]["device_series"] for run in entry["executions"]]
        assert machines == ["n300", "n150"]
        assert entry["config_hash"] == config_hash(op, entry["arguments"], entry["executions"][0]["machine_info"])
    assert store.verify() == []
    vectors = model_traced(build(store), Selection()).decoded()
    assert Counter((v["op"], v["machine"]) for v in vectors) == {
        ("ttnn.add", "n300"): 1, ("ttnn.add", "n150"): 1, ("ttnn.rand", "n300"): 1, ("ttnn.rand", "n150"): 1,
    }  # fmt: skip
    for v in vectors:  # each vector keeps the config's one hash and says where it was traced
        entry = store.config(v["op"], v["config_hash"])
        assert entry is not None and v["traced_machine"]["device_series"] == v["machine"]
    forced = model_traced(build(store), Selection(machine="n300")).decoded()
    assert len(forced) == 2  # under --machine the two machines' vectors are one
    # an execution that names no machine adds its source to the machines' vectors, not a vector of its own
    store.merge(read_inputs([str(TRACER_EXAMPLES)]))
    assert len(store) == 2
    vectors = model_traced(build(store), Selection()).decoded()
    assert len(vectors) == 4 and all("operation_tracer_examples" in v["sources"] for v in vectors)


# --- the written dialect ------------------------------------------------------------------------


def test_stores_are_written_in_the_current_dialect_with_tt_metals_keys(tmp_path):
    store, path = _import(tmp_path, MINI)
    text = (tmp_path / "store.json").read_text()
    assert '"Tensor"' not in text and "DataType::" not in text and "::" not in text
    (slice_config,) = store["operations"]["ttnn.slice"]["configurations"]
    arg0 = slice_config["arguments"]["arg0"]
    assert arg0["type"] == "ttnn.Tensor" and arg0["original_dtype"] == "DataType.BFLOAT16"
    assert "layout" not in arg0  # the graph tracer never recorded it: left out, not invented
    assert arg0["memory_config"]["shard_spec"]["grid"] == [{"start": {"x": 0, "y": 0}, "end": {"x": 7, "y": 0}}]
    assert slice_config["sweep_source_hash"] == "sh1"
    assert store["metadata"]["trace_uid"] == "mini-trace"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", store["metadata"]["last_updated"])
    # a store read and written again keeps all of it
    assert main(["store", "import", str(ADD_SWEEP), "--into", path]) == 0
    again = load_json(path)
    assert again["metadata"]["trace_uid"] == "mini-trace"
    assert again["operations"]["ttnn.slice"]["configurations"][0]["sweep_source_hash"] == "sh1"
    # no key without a value: tt-metal's loader then applies its own defaults
    no_source = {"operations": {"ttnn.add": {"configurations": [{"arguments": {"arg0": 1}, "source": None}]}}}
    written, _ = _import(tmp_path, write_json(tmp_path / "d2.json", no_source), name="nulls.json")
    (run,) = written["operations"]["ttnn.add"]["configurations"][0]["executions"]
    assert "source" not in run and "machine_info" not in run
    assert ttmetal.loader_rows(written, "ttnn.add")[0]["traced_source"] == "unknown"


# --- contract: tt-metal's loader reads what we write as it reads the originals ------------------


def _rows(master: dict, legacy: bool = False) -> dict[str, list[dict]]:
    """Loader rows per canonical op name; an empty machine_info and none are the same to every
    tt-metal reader (each tests it for truth), so both read as None."""
    out = {}
    for raw_op in master["operations"]:
        rows = ttmetal.loader_rows(master, raw_op, legacy=legacy)
        for row in rows:
            if "traced_machine_info" in row and not row["traced_machine_info"]:
                row["traced_machine_info"] = None
        out[canonical_op_name(raw_op)] = rows
    return out


def _older_dialect(tmp_path, dialect: int):
    """The add-sweep configs as tt-metal's older tracers wrote them (dialect 2 or 3, no hash)."""
    add = load_json(str(ADD_SWEEP))["operations"]["ttnn.add"]["configurations"]
    if dialect == 2:
        configs = [{"arguments": c["arguments"], "source": c["executions"][0]["source"],
                    "machine_info": c["executions"][0]["machine_info"]} for c in add]  # fmt: skip
    else:
        configs = [{"arguments": c["arguments"], "contexts": [{"source": [c["executions"][0]["source"]],
                    "machine_info": [c["executions"][0]["machine_info"]]}]} for c in add]  # fmt: skip
    return write_json(tmp_path / f"d{dialect}.json", {"operations": {"ttnn::add": {"configurations": configs}}})


INPUTS = {
    "add_sweep": ADD_SWEEP, "deepseek": DEEPSEEK, "sample": SAMPLE, "mini": MINI,
    "tracer_examples": TRACER_EXAMPLES, "galaxy_trace": GALAXY_TRACE, "dialect2": 2, "dialect3": 3,
}  # fmt: skip


@pytest.mark.parametrize("name", list(INPUTS))
def test_tt_metals_loader_reads_our_stores_to_the_rows_of_the_originals(name, tmp_path):
    source = INPUTS[name]
    if isinstance(source, int):
        source = _older_dialect(tmp_path, source)
    if os.path.isdir(source):  # the original: the master tt-metal's tracer writes from the directory
        original = ttmetal.master_from_trace_dir(str(source))
    else:
        original = load_json(str(source))
    expected = _rows(original, legacy=name == "mini")  # mini: read its graph-tracer tensors too
    written, _ = _import(tmp_path, source)
    got = _rows(written)
    assert got.keys() == expected.keys()
    for op in got:
        for row, want in zip(got[op], expected[op], strict=True):
            if want["config_hash"] in (None, "abc123", "def456"):
                # no stored hash (dialects 2, 3), or made-up ones of the old spelling (mini): ours is the
                # current version of what we store
                config = next(c for c in written["operations"][op]["configurations"]
                              if c["config_hash"] == row["config_hash"])  # fmt: skip
                assert row["config_hash"] == config_hash(op, config["arguments"],
                                                         config["executions"][0].get("machine_info"))  # fmt: skip
                row["config_hash"] = want["config_hash"]
            if name == "dialect3":  # contexts name machines as lists; executions (tt-metal's own migration) one each
                (want["traced_machine_info"],) = want["traced_machine_info"]
            assert row == want, op
    assert sum(map(len, got.values())) > 0
    assert not any("skipped" in row for rows in got.values() for row in rows)


def test_export_generates_the_vector_tt_metals_loader_generates(tmp_path):
    """op_params_set is the flattened generated vector: the same keys as the loader's row."""
    store = MasterStore.load(str(SAMPLE))
    original = load_json(str(SAMPLE))
    vectors = model_traced(build(store), Selection()).decoded()
    checked = 0
    for vector in vectors:
        rows = [r for r in ttmetal.loader_rows(original, vector["op"]) if r["config_hash"] == vector["config_hash"]]
        if not rows:
            continue
        ours = generated_vector(vector)
        assert set(ours) == set(rows[0]), vector["op"]
        assert ours["traced_source"] == rows[0]["traced_source"]
        for key, value in ours.items():
            if key.endswith("_shape"):
                assert tuple(value) == rows[0][key]
        checked += 1
    assert checked == len(store)


# --- OpRun / OpTest -------------------------------------------------------------------------------


def _row(state: str, n: int, **record) -> Row:
    vector = make_vector("sweepctl.test.noop", "model_traced", "n300", [1, 2], [n], {}, 30.0, config_hash=f"cfg-{n}",
                         sources=["models/demo.py"], traced_machine=N300)  # fmt: skip
    done = state != PENDING
    times = {"start": 1_700_000_000.0 + n, "end": 1_700_000_001.0 + n} if done else {}
    return Row(vector, state, record.pop("pcc", None), record.pop("e2e_ms", None), "", {**times, **record})


def _report(complete: bool) -> dict:
    meta = {"created": 1_700_000_000.0, "who": "ci", "host": "host-1", "selection": {"ops": None, "suite": "s"}}
    return {"meta": meta, "complete": complete}


def test_every_status_exports_valid_optest_and_the_run_status_says_what_happened():
    rows = [_row(state, n, message=f"{state} message") for n, state in enumerate(status.ALL)]
    oprun = OpRun.model_validate(json.loads(to_optest(_report(True), rows)))
    mapped = {row.status: test.status.value for row, test in zip(rows, oprun.tests, strict=True)}
    assert mapped == {
        status.ERROR: "error", status.PASS: "pass", status.FAIL_ACCURACY: "fail_assert_exception",
        status.FAIL_OP: "fail_assert_exception", status.FAIL_L1_OOM: "fail_l1_out_of_mem",
        status.HANG: "fail_crash_hang", status.CRASH: "fail_crash_hang", status.INVALID: "skipped",
        status.INFRA: "error", status.NOT_RUN: "skipped", status.EXPIRED: "skipped", status.CANCELED: "skipped",
        status.REUSED: "skipped",
    }  # fmt: skip
    assert oprun.status.value == "did_not_finish"  # vectors were canceled and expired
    cases = {
        (status.PASS,): "passed",
        (status.PASS, status.NOT_RUN, status.INVALID): "passed",
        (status.PASS, status.FAIL_OP): "fail",
        (status.PASS, status.INFRA): "fail",
        (status.PASS, status.ERROR): "fail",
        (status.CANCELED, status.CANCELED): "did_not_finish",
        (status.PASS, status.EXPIRED): "did_not_finish",
    }
    for states, want in cases.items():
        run = OpRun.model_validate(json.loads(to_optest(_report(True), [_row(s, n) for n, s in enumerate(states)])))
        assert run.status.value == want, states


def test_an_unfinished_run_leaves_pending_vectors_out_and_validates():
    rows = [_row(status.PASS, 1, pcc=0.999, e2e_ms=4.0), _row(PENDING, 2), _row(PENDING, 3)]
    before = time.time()
    doc = json.loads(to_optest(_report(False), rows))
    oprun = OpRun.model_validate(doc)
    assert oprun.status.value == "did_not_finish" and len(oprun.tests) == 1
    assert oprun.run_end_ts.timestamp() >= before  # as of the export: the run had not ended
    (test,) = doc["tests"]
    assert test["message"] == "0.999" and test["metrics"] == [{"metric_name": "e2e_perf_ms", "metric_value": 4.0}]
    assert test["card_type"] == "Wormhole n300 (1 card)" and test["error_message"] == "None"
    assert test["exception"] is None
    nothing = OpRun.model_validate(json.loads(to_optest(_report(False), [_row(PENDING, 1)])))
    assert nothing.tests == [] and nothing.status.value == "did_not_finish"


# --- OpRun / OpTest of real runs ------------------------------------------------------------------

PREFIX = "roundtrip"
A = tensor([1, 1, 32, 32], "BFLOAT16", DRAM)


def _test_vector(op: str, n: int, machine: str = "n300", inputs: list | None = None, **kwargs) -> dict:
    return make_vector(f"sweepctl.test.{op}", "model_traced", machine, [1, 2], inputs or [n], kwargs, 30.0,
                       config_hash=f"cfg-{op}-{n}", sources=["models/demo.py [HF_MODEL:org/model]"],
                       traced_machine=N300 if machine == "n300" else GALAXY)  # fmt: skip


def _traced_multiply() -> dict:
    vectors = model_traced(build(MasterStore.load(str(SAMPLE))), Selection(ops=["ttnn.multiply"])).decoded()
    return next(v for v in vectors if v["machine"] == "n300")


EXPECTATIONS = """
schema: 1
entries:
  - config_hash: cfg-raise-3
    status: known_failure
    reason: raises on purpose
    link: https://github.com/tenstorrent/tt-metal/issues/1
  - config_hash: cfg-noop-4
    status: known_failure
    reason: used to fail
    link: https://github.com/tenstorrent/tt-metal/issues/2
"""


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    """A real redis-server and a real emulated n300 worker; runs that end in every status a real run
    reaches: PASS, FAIL_OP, ERROR, NOT_RUN, INVALID (and XFAIL/XPASS under EXPECTATIONS), CANCELED,
    EXPIRED, and a run left unfinished (its galaxy vectors have no worker)."""
    from broker.app import make_app
    from broker.coordinator import Plan, publish
    from broker.keys import Keys
    from broker.lifecycle import cancel

    tmp = tmp_path_factory.mktemp("roundtrip")
    with running_redis(tmp) as url:
        client, keys = redis.Redis.from_url(url), Keys(PREFIX)
        with emulated_worker(url, PREFIX, "w-roundtrip", tmp):
            app = make_app(url, keys)
            mixed = [_test_vector("noop", 1), _test_vector("raise", 2), _test_vector("raise", 3),
                     _test_vector("noop", 4), _test_vector("golden_error", 5, inputs=[A, 1, 2]),
                     _test_vector("noop", 6), _test_vector("noop", 7), _traced_multiply()]  # fmt: skip
            expansion = Expansion.of(mixed)
            expansion.not_run[mixed[5]["id"]] = "no sweep definition for this op"
            selection = Selection(ops=["ttnn.multiply"])
            publish(app, client, keys, Plan("mixed", selection, expansion, {mixed[6]["id"]: "shard grid too wide"}))
            publish(
                app, client, keys, Plan("canceled", Selection(), Expansion.of([_test_vector("noop", 8, "galaxy")]), {})
            )
            cancel(client, keys, "canceled")
            later = Expansion.of([_test_vector("noop", 9), _test_vector("noop", 10)])
            publish(app, client, keys, Plan("expired", Selection(), later, {}), expires=0.001)
            half = Expansion.of([_test_vector("noop", 11), _test_vector("noop", 12, "galaxy")])
            publish(app, client, keys, Plan("unfinished", Selection(), half, {}))
            deadline = time.monotonic() + 240
            while (client.hlen(keys.final("mixed")), client.hlen(keys.final("expired")),
                   client.hlen(keys.final("unfinished"))) != (8, 2, 1):  # fmt: skip
                if time.monotonic() > deadline:
                    pytest.fail("the runs did not finish: " + (tmp / "worker.log").read_text()[-3000:])
                time.sleep(0.2)
            (tmp / "expectations.yaml").write_text(EXPECTATIONS)
            yield url, tmp


def _export(url: str, tmp, run_id: str, *extra: str) -> dict:
    out = tmp / f"{run_id}-{len(extra)}"
    out.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "broker.cli", "report", run_id, "--format", "optest", "-o", str(out), *extra,
           "--redis", url, "--prefix", PREFIX]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    paths = list(out.glob("oprun_*.json"))
    assert len(paths) == 1, done.stderr
    (path,) = paths
    return json.loads(path.read_text())


@pytest.mark.slow
def test_every_export_of_real_runs_validates_against_tt_metals_models(real_runs):
    url, tmp = real_runs
    counts = {}
    for run_id, extra in [("mixed", ()), ("mixed", ("--expectations", str(tmp / "expectations.yaml"))),
                          ("canceled", ()), ("expired", ()), ("unfinished", ())]:  # fmt: skip
        doc = _export(url, tmp, run_id, *extra)
        oprun = OpRun.model_validate(doc)  # raises on anything tt-metal's import would reject
        counts[(run_id, bool(extra))] = (oprun.status.value, dict(Counter(t.status.value for t in oprun.tests)))
    print("\nOpTest statuses per export:", json.dumps({f"{r}{'+exp' if e else ''}": c for (r, e), c in counts.items()}))
    assert counts[("mixed", False)] == ("fail", {"pass": 3, "fail_assert_exception": 2, "error": 1, "skipped": 2})
    # under expectations cfg-raise-3 is XFAIL and cfg-noop-4 XPASS: tt-metal's mapping ends both as "error"
    assert counts[("mixed", True)] == ("fail", {"pass": 2, "fail_assert_exception": 1, "error": 3, "skipped": 2})
    assert counts[("canceled", False)] == ("did_not_finish", {"skipped": 1})
    assert counts[("expired", False)] == ("did_not_finish", {"skipped": 2})
    assert counts[("unfinished", False)] == ("did_not_finish", {"pass": 1})  # the galaxy vector is pending


@pytest.mark.slow
def test_real_optest_fields_are_written_as_tt_metal_writes_them(real_runs):
    url, tmp = real_runs
    doc = _export(url, tmp, "mixed")
    assert doc["run_contents"] == "model_traced.multiply_model_traced, model_traced"
    assert "n/a" not in (doc["git_author"], doc["git_branch_name"], doc["git_sha"])
    multiply = next(t for t in doc["tests"] if t["op_name"] == "multiply_model_traced")
    params = {p["param_name"]: p for p in multiply["op_params_set"]}
    assert params["input_a_dtype"]["param_value_text"] == "DataType.BFLOAT16"
    assert params["input_a_shape"]["param_value_json"] == multiply_shape()
    assert params["traced_source"]["param_value_text"]
    assert params["traced_machine_info.device_series"]["param_value_text"] == "n300"
    assert "op" not in params and "inputs" not in params  # tt-metal's keys, not our vector's
    assert re.fullmatch(r"0\.\d+|1\.0", multiply["message"])  # the bare PCC
    assert multiply["card_type"] == "Wormhole n300 (1 card)"
    skipped = next(t for t in doc["tests"] if t["status"] == "skipped")
    assert skipped["metrics"] is None and skipped["exception"] is None


def multiply_shape() -> list:
    tensors = [v for v in _traced_multiply()["inputs"] if isinstance(v, dict) and "tensor" in v]
    return tensors[0]["tensor"]["shape"]


def test_argument_sets_are_told_apart_even_when_their_keys_collide(monkeypatch):
    from tracer import store as store_module
    from tracer.entry import TracedEntry

    monkeypatch.setattr(store_module, "argument_key", lambda text: 42)  # every key collides
    store = MasterStore()
    entries = [TracedEntry("ttnn.add", {"arg1": 1}), TracedEntry("ttnn.add", {"arg1": 1.0}),
               TracedEntry("ttnn.add", {"arg1": 1.0}), TracedEntry("ttnn.add", {"arg1": 1})]  # fmt: skip
    summary = store.merge(entries).as_dict()
    assert (summary["new_configs"], summary["known_configs"]) == (2, 2)  # 1 and 1.0: two configs, as to tt-metal
    assert [e["arguments"] for _, e in store.entries()] == [{"arg1": 1}, {"arg1": 1.0}]


def test_a_bad_trace_metadata_file_is_one_line_and_nothing_is_written(tmp_path, capsys):
    directory = tmp_path / "trace"
    shutil.copytree(TRACER_EXAMPLES, directory)
    (directory / "_trace_metadata.json").write_text('{"test_source": "x.py", "machine_info": ')
    capsys.readouterr()
    assert main(["store", "import", str(directory), "--into", str(tmp_path / "store.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "_trace_metadata.json" in err and "malformed JSON" in err
    assert not (tmp_path / "store.json").exists()
