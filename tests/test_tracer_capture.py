"""`sweepctl trace` for real: a pytest "model" of host-runnable ttnn ops under a mock N300 cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tracer.args import canonical_arguments
from tracer.store import MasterStore

MODEL = ROOT / "tests" / "fixtures" / "model" / "test_tiny_model.py"


def _sweepctl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
        timeout=600,
    )


@pytest.mark.slow
def test_trace_keeps_passed_tests_and_drops_infrastructure(tmp_path):
    store_path = tmp_path / "master.json"
    proc = _sweepctl("trace", str(MODEL), "--machine", "n300", "--store", str(store_path), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    statuses = {node.split("::")[-1]: status for node, status in summary["tests"].items()}
    assert statuses == {
        "test_decode_block": "passed",
        "test_prefill_constants": "passed",
        "test_broken_layer": "failed",
    }
    store = MasterStore.load(str(store_path))
    assert set(store.ops) == {"ttnn.typecast", "ttnn.squeeze", "ttnn.unsqueeze", "ttnn.full"}
    assert summary["new_configs"] == 4
    typecasts = [e for _, e in store.entries("ttnn.typecast")]
    assert len(typecasts) == 1  # the failing test's uint32 typecast is gone
    run = typecasts[0]["executions"][0]
    assert run["count"] == 3 and run["source"].endswith("test_tiny_model.py::test_decode_block")
    assert run["machine_info"]["device_series"] == "n300"
    canonical = canonical_arguments(typecasts[0]["arguments"])
    assert canonical["args"][0]["tensor"]["shape"] == [1, 1, 32, 64]
    assert canonical["args"][0]["tensor"]["dtype"] == "BFLOAT16"
    assert canonical["args"][1] == {"enum": "DataType", "value": "FLOAT32"}
    # what was traced is hashed like tt-metal would: verify recomputes every hash
    assert store.verify() == []

    # a second trace run of the same model: nothing new, counts add up
    again = _sweepctl("trace", str(MODEL), "--machine", "n300", "--store", str(store_path), "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["new_configs"] == 0
    runs = next(iter(MasterStore.load(str(store_path)).ops["ttnn.typecast"].values()))["executions"]
    assert sum(r["count"] for r in runs) == 6


def test_trace_without_machine_on_a_host_without_tt_smi_is_one_line(tmp_path):
    proc = _sweepctl("trace", str(MODEL), "--store", str(tmp_path / "m.json"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--machine" in proc.stderr
    assert not (tmp_path / "m.json").exists()


def test_trace_a_script_and_a_failing_script(tmp_path):
    good = tmp_path / "model.py"
    good.write_text(
        "import torch, ttnn\n"
        "x = ttnn.from_torch(torch.randn(1, 1, 32, 32), dtype=ttnn.bfloat16, layout=ttnn.TILE_LAYOUT)\n"
        "ttnn.typecast(x, ttnn.float32)\n",
        encoding="utf-8",
    )
    bad = tmp_path / "broken.py"
    bad.write_text(good.read_text(encoding="utf-8") + "raise SystemExit(3)\n", encoding="utf-8")
    store_path = tmp_path / "m.json"
    ok = _sweepctl("trace", str(good), "--machine", "n150", "--store", str(store_path), "--json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads(ok.stdout)["per_op"] == {"ttnn.typecast": {"new": 1, "known": 0}}
    before = store_path.read_bytes()
    failed = _sweepctl("trace", str(bad), "--machine", "n150", "--store", str(store_path), cwd=tmp_path)
    assert failed.returncode == 1 and "nothing merged" in failed.stderr
    assert store_path.read_bytes() == before
