"""Reports on real runs: a real redis-server, a real emulated worker (Celery solo worker with its
executor, ttnn host functions), two runs of the same traced configs where the second regresses.

Base and run share config hashes: cfg-a passes then fails with a new TT_FATAL, cfg-b fails then
passes, cfg-c gets 300 ms slower, cfg-d (a real ttnn.multiply) drops from bfloat16 to bfloat8_b
inputs, so its PCC falls; cfg-e is the same vector in both runs. The run also has one more failure
whose message differs from cfg-a's only in its numbers: one failure bucket.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest
import redis

from broker.app import make_app
from broker.coordinator import Plan, publish
from broker.keys import Keys
from sweeps import status
from sweeps.index import load as load_index
from sweeps.suites import Expansion, Selection, expand
from sweeps.vector import make_vector
from tests.conftest import ROOT, cli, emulated_worker, running_redis
from tests.ttmetal_models import OpRun
from tracer.store import MasterStore

pytestmark = pytest.mark.slow
PREFIX = "reports"
FATAL = "TT_FATAL @ matmul_op.cpp:{line}: in0 width {a} must equal in1 height {b} at 0x7f{line}ab"


def _test_vector(op: str, n: int, config_hash: str | None, **kwargs) -> dict:
    return make_vector(f"sweepctl.test.{op}", "model_traced", "n300", [1, 2], [n], kwargs, 30.0,
                       config_hash=config_hash, sources=[f"models/demo.py [HF_MODEL:org/model-{n % 2}]"])  # fmt: skip


def _multiply(dtype: str) -> dict:
    index = load_index(str(ROOT / "sweeps" / "data" / "sample_master.json"))
    traced = next(v for v in expand(index, Selection(ops=["ttnn.multiply"])).decoded() if v["machine"] == "n300")
    inputs = copy.deepcopy(traced["inputs"])
    inputs[0]["tensor"]["dtype"] = dtype
    return make_vector("ttnn.multiply", "model_traced", "n300", traced["mesh_shape"], inputs, traced["kwargs"],
                       traced["timeout"], config_hash="cfg-d", sources=traced["sources"])  # fmt: skip


def _runs() -> tuple[list[dict], list[dict]]:
    base = [
        _test_vector("noop", 1, "cfg-a"),
        _test_vector("raise", 2, "cfg-b"),
        _test_vector("sleep", 3, "cfg-c", seconds=0.0),
        _multiply("BFLOAT16"),
        _test_vector("noop", 5, "cfg-e"),
    ]
    run = [
        _test_vector("raise", 1, "cfg-a", message=FATAL.format(line=42, a=64, b=96)),
        _test_vector("noop", 2, "cfg-b"),
        _test_vector("sleep", 3, "cfg-c", seconds=0.3),
        _multiply("BFLOAT8_B"),
        _test_vector("noop", 5, "cfg-e"),
        _test_vector("raise", 9, None, message=FATAL.format(line=57, a=128, b=160)),
    ]
    return base, run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reports")
    with running_redis(tmp) as url:
        client, keys = redis.Redis.from_url(url), Keys(PREFIX)
        with emulated_worker(url, PREFIX, "w-reports", tmp):
            app = make_app(url, keys)
            for run_id, vectors in zip(("base", "run"), _runs(), strict=True):
                publish(app, client, keys, Plan(run_id, Selection(), Expansion.of(vectors), {}), chunk=2)
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                if client.hlen(keys.final("base")) == 5 and client.hlen(keys.final("run")) == 6:
                    break
                time.sleep(0.2)
            else:
                pytest.fail("the runs did not finish: " + (tmp / "worker.log").read_text()[-3000:])
            yield url, tmp


def sweepctl(url: str, *args: str) -> subprocess.CompletedProcess:
    return cli(url, PREFIX, *args)


def test_report_buckets_failures_by_signature(runs):
    url, _ = runs
    out = sweepctl(url, "report", "run", "--json")
    assert out.returncode == 1, out.stderr  # executed failures
    report = json.loads(out.stdout)
    assert report["counts"] == {status.PASS: 4, status.FAIL_OP: 2}
    (bucket,) = report["buckets"]
    assert bucket["count"] == 2 and bucket["statuses"] == {status.FAIL_OP: 2}
    assert bucket["ops"] == {"sweepctl.test.raise": 2} and bucket["machines"] == {"n300": 2}
    assert "<n>" in bucket["signature"] and "64" not in bucket["signature"] and "<addr>" in bucket["signature"]
    failing = {f["vector"] for f in report["failures"]}
    assert bucket["example_vector"] in failing
    text = sweepctl(url, "report", "run").stdout
    assert "failure buckets" in text and "matmul_op.cpp:<n>" in text


def test_report_by_machine_and_by_model(runs):
    url, _ = runs
    by_machine = json.loads(sweepctl(url, "report", "base", "--by", "machine", "--json").stdout)
    ops = by_machine["machines"]["n300"]["ops"]
    assert ops["sweepctl.test.raise"]["counts"] == {status.FAIL_OP: 1}
    assert ops["ttnn.multiply"]["counts"] == {status.PASS: 1}
    by_model = json.loads(sweepctl(url, "report", "run", "--by", "model", "--json").stdout)["models"]
    assert set(by_model) >= {"org/model-0", "org/model-1"}
    model1 = {c["config"]: c["status"] for c in by_model["org/model-1"]["configs"]}
    unhashed = [k for k in model1 if not k.startswith("cfg-")]  # no config_hash: keyed by vector id
    assert len(model1) == 4 and len(unhashed) == 1
    assert model1["cfg-a"] == model1[unhashed[0]] == {"n300": status.FAIL_OP}
    assert model1["cfg-c"] == model1["cfg-e"] == {"n300": status.PASS}
    text = sweepctl(url, "report", "run", "--by", "model", "--model", "model-1").stdout
    assert "model org/model-1" in text and "org/model-0" not in text


def test_compare_finds_each_kind_of_change(runs):
    url, _ = runs
    out = sweepctl(url, "report", "run", "--compare", "base", "--pcc-tolerance", "1e-6", "--json")
    assert out.returncode == 1, out.stderr
    diff = json.loads(out.stdout)["compare"]
    assert diff["counts"] == {"newly_failing": 1, "newly_passing": 1, "pcc_drops": 1, "e2e_regressions": 1}
    assert diff["compared"] == 5 and diff["unchanged"] == 1 and diff["joined_by_config_hash"] == 4
    assert diff["only_in_run"] == 1 and diff["only_in_base"] == 0
    assert [c["config_hash"] for c in diff["changes"]["newly_failing"]] == ["cfg-a"]
    assert [c["config_hash"] for c in diff["changes"]["newly_passing"]] == ["cfg-b"]
    (drop,) = diff["changes"]["pcc_drops"]
    assert drop["op"] == "ttnn.multiply" and drop["run"]["pcc"] < drop["base"]["pcc"]
    (slow,) = diff["changes"]["e2e_regressions"]
    assert slow["run"]["e2e_ms"] - slow["base"]["e2e_ms"] > 250
    (new_sig,) = diff["new_signatures"]  # cfg-b's failure in the base had another message
    assert new_sig["count"] == 2 and "matmul_op.cpp" in new_sig["signature"]
    assert diff["regressed"]
    same = sweepctl(url, "report", "base", "--compare", "base")
    assert same.returncode == 0 and "no regression" in same.stdout
    improved = sweepctl(url, "report", "base", "--compare", "run", "--ignore-perf", "--json")
    counts = json.loads(improved.stdout)["compare"]["counts"]
    assert counts["newly_failing"] == 1 and counts["newly_passing"] == 1  # the mirror image
    missing = sweepctl(url, "report", "run", "--compare", "nope")
    assert missing.returncode == 2 and "no such run" in missing.stderr and "Traceback" not in missing.stderr


def _expectations(tmp, text: str):
    path = tmp / "expectations.yaml"
    path.write_text(text)
    return str(path)


def test_expectations_turn_failures_into_xfail_and_list_xpass(runs):
    url, tmp = runs
    path = _expectations(tmp, """
schema: 1
entries:
  - op: sweepctl.test.raise
    status: known_failure
    reason: raises on purpose
    link: https://github.com/tenstorrent/tt-metal/issues/1
  - config_hash: cfg-b
    status: known_failure
    reason: used to raise
    link: https://github.com/tenstorrent/tt-metal/issues/2
  - op: ttnn.multiply
    status: expected_passing
    pcc: 0.9999999
    machines:
      galaxy: {status: exclude}
  - config_hash: cfg-e
    status: exclude
""")
    out = sweepctl(url, "report", "run", "--expectations", path, "--json")
    judged = json.loads(out.stdout)["expectations"]
    # both raises are XFAIL; cfg-b (noop now) is XPASS; the bf8 multiply misses the required PCC
    assert judged["counts"] == {"EXCLUDED": 1, status.PASS: 1, "FAIL": 1, "XFAIL": 2, "XPASS": 1}, judged
    (fail,) = judged["unexpected_failures"]
    assert fail["op"] == "ttnn.multiply" and "below the 0.9999999" in fail["message"]
    (promote,) = judged["xpass_to_promote"]
    assert "cfg-b" in promote["entry"]
    assert out.returncode == 1
    lenient = _expectations(tmp, "schema: 1\nentries:\n  - op: sweepctl.test.raise\n    status: not_supported\n")
    assert sweepctl(url, "report", "run", "--expectations", lenient).returncode == 0  # nothing unexpected


def test_expectations_check_reports_problems_with_lines(tmp_path):
    store = ROOT / "sweeps" / "data" / "sample_master.json"
    hashes = [e["config_hash"] for _, e in MasterStore.load(str(store)).entries()]
    good = tmp_path / "good.yaml"
    good.write_text(f"schema: 1\nentries:\n  - config_hash: {hashes[0]}\n    status: not_supported\n"
                    "  - op: ttnn.add\n    status: expected_passing\n"
                    "    machines:\n      n300: {pcc: 0.99}\n")  # fmt: skip
    run = [sys.executable, "-m", "broker.cli", "expectations", "check"]
    ok = subprocess.run([*run, str(good), "--store", str(store)], capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0 and "0 problems" in ok.stdout, ok.stdout + ok.stderr
    stale = tmp_path / "stale.yaml"
    stale.write_text("schema: 1\nentries:\n  - op: ttnn.add\n    status: expected_passing\n"
                     "  - config_hash: deadbeef\n    status: exclude\n  - op: ttnn.not_an_op\n    status: exclude\n"
                     "  - op: ttnn.silu\n    status: exclude\n"
                     "    machines:\n      n999: {status: exclude}\n")  # fmt: skip
    bad = subprocess.run([*run, str(stale), "--store", str(store), "--json"], capture_output=True, text=True, cwd=ROOT)
    problems = json.loads(bad.stdout)["problems"]
    assert bad.returncode == 1 and len(problems) == 3
    assert any(":5:" in p and "stale config_hash deadbeef" in p for p in problems)
    assert any(":7:" in p and "unknown op ttnn.not_an_op" in p for p in problems)
    assert any("unknown machine n999" in p for p in problems)
    for text, message in (
        ("schema: 1\nentries:\n  - op: ttnn.add\n    status: flaky\n", ":3: status 'flaky'"),
        ("schema: 1\nentries:\n  - op: ttnn.add\n    status: known_failure\n", "needs a reason and a tracking link"),
        ("schema: 1\nentries:\n  - op: ttnn.add\n    config_hash: x\n    status: exclude\n", "exactly one of"),
        ("schema: 2\nentries: []\n", "schema 2 is not 1"),
        ("schema: 1\nentries:\n  - op: [unclosed\n", "not valid YAML"),
    ):
        broken = tmp_path / "broken.yaml"
        broken.write_text(text)
        out = subprocess.run([*run, str(broken)], capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_exports_csv_junit_optest(runs):
    url, tmp = runs
    rows = list(csv.DictReader(io.StringIO(sweepctl(url, "report", "run", "--format", "csv").stdout)))
    assert len(rows) == 6 and {r["status"] for r in rows} == {status.PASS, status.FAIL_OP}
    assert all(r["backend"] == "emulated" for r in rows)
    multiply = next(r for r in rows if r["op"] == "ttnn.multiply")
    assert float(multiply["pcc"]) < 1.0 and int(multiply["elements"]) > 0
    junit = ET.fromstring(sweepctl(url, "report", "run", "--format", "junit").stdout)
    assert junit.get("tests") == "6" and junit.get("failures") == "2"
    failures = junit.findall(".//testcase/failure")
    assert {f.get("type") for f in failures} == {status.FAIL_OP} and "matmul_op.cpp" in failures[0].get("message")
    out = sweepctl(url, "report", "run", "--format", "optest", "--output", str(tmp))
    assert out.returncode == 1  # the run failed; the file is written anyway
    (path,) = tmp.glob("oprun_*.json")
    oprun = json.loads(path.read_text())
    assert oprun["run_type"] == "sweeps" and oprun["status"] == "fail" and len(oprun["tests"]) == 6
    by_status = {t["status"] for t in oprun["tests"]}
    assert by_status == {"pass", "fail_assert_exception"}
    traced = next(t for t in oprun["tests"] if t["input_hash"] == "cfg-d")
    assert traced["op_name"] == "multiply_model_traced" and traced["op_kind"] == "model_traced"
    assert traced["backend"] == "emulated" and traced["metrics"][0]["metric_name"] == "e2e_perf_ms"
    params = {p["param_name"]: p for p in traced["op_params_set"]}  # the vector tt-metal's loader generates
    assert params["input_a_dtype"]["param_value_text"] == "DataType.BFLOAT8_B" and "traced_source" in params
    OpRun.model_validate(oprun)  # what tt-metal's import validates the file with
    failed = next(t for t in oprun["tests"] if t["status"] == "fail_assert_exception")
    assert failed["error_hash"] and failed["exception"].startswith("TT_FATAL") and not failed["success"]
    with_exp = _expectations(tmp, "schema: 1\nentries:\n  - op: sweepctl.test.raise\n    status: not_supported\n")
    xml = ET.fromstring(sweepctl(url, "report", "run", "--format", "junit", "--expectations", with_exp).stdout)
    assert xml.get("failures") == "0" and xml.get("skipped") == "2"  # XFAIL is skipped in CI


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is installed by scripts/setup.sh")
def test_html_report_renders_offline_in_a_real_browser(runs):
    from PIL import Image

    url, tmp = runs
    page = tmp / "report.html"
    assert sweepctl(url, "report", "run", "--format", "html", "-o", str(page)).returncode == 1
    html = page.read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "<script" not in html
    browser = [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--window-size=1200,1400"]  # fmt: skip
    dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.stdout.count('class="pcc"') == 4  # every PASS has a PCC; a raise has none
    assert 'id="machine-bars"' in dom.stdout and dom.stdout.count('class="e2e-point"') == 1  # only multiply has tensors
    shot = tmp / "report.png"
    subprocess.run([*browser, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    image = Image.open(shot).convert("RGB")
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 24)}
    assert (0x2E, 0x7D, 0x32) in colours and (0xC6, 0x28, 0x28) in colours  # PASS green, FAIL_OP red drawn
