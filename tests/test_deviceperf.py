"""Device perf: the profiler's per-chip programs summarised as tt-metal's figures, built from
ttnn 0.81.1's own profiler types (in a child process under a mock cluster); absent, not zero, when
the profiler is off. No device here, so no figure is ever measured: only the parsing and the
absent path are tested."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from broker.results import make_record
from sweeps.profiles import get_profile
from tests.conftest import ROOT

_CHILD = """
import json, sys
import ttnn
from ttnn._ttnn import profiler
from workers import deviceperf

def program(cores, **durations):
    data = profiler.ProgramAnalysisData()
    results = {}
    for name, ns in durations.items():
        result = profiler.ProgramSingleAnalysisResult()
        result.start_timestamp, result.end_timestamp, result.duration = 1000, 1000 + ns, ns
        results[name] = result
    data.program_analyses_results = results
    data.core_count = cores
    return data

K, F = "DEVICE KERNEL DURATION [ns]", "DEVICE FW DURATION [ns]"
chips = {  # a two-program op on two chips; chip 1 is the slower one
    0: [program(64, **{K: 1000, F: 1500}), program(8, **{K: 200, F: 300})],
    1: [program(64, **{K: 1100, F: 1400}), program(8, **{K: 250, F: 250, "UNKNOWN ANALYSIS": 7})],
}
off = deviceperf.measured(ttnn, None)  # profiler off: the mesh (None here) is never touched
latest = profiler.get_latest_programs_perf_data()  # what this build returns with nothing read
print(json.dumps({"figures": deviceperf.summarize(chips), "empty": deviceperf.summarize(latest),
                  "off": off}))
"""


def test_profiler_figures_per_op_and_absent_without_the_profiler():
    env = {**os.environ, "TT_METAL_MOCK_CLUSTER_DESC_PATH": get_profile("n150").mock_cluster_path}
    env.pop("TT_METAL_DEVICE_PROFILER", None)
    done = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["figures"] == {  # summed over the op's programs per chip, the slowest chip's
        "DEVICE KERNEL DURATION [ns]": 1350,
        "DEVICE FW DURATION [ns]": 1800,
        "CORE COUNT": 64,
    }
    assert out["empty"] == {} and out["off"] == {}


def test_record_has_device_perf_only_when_measured():
    vector = {"id": "v", "op": "ttnn.add", "machine": "n300", "config_hash": "h"}
    outcome = {"status": "PASS", "pcc": 1.0, "threshold": 0.999, "e2e_ms": 1.0}
    assert "device_perf" not in make_record(vector, "R", 1, outcome)
    assert "device_perf" not in make_record(vector, "R", 1, {**outcome, "device_perf": {}})
    perf = {"DEVICE KERNEL DURATION [ns]": 1350, "CORE COUNT": 64}
    assert make_record(vector, "R", 1, {**outcome, "device_perf": perf})["device_perf"] == perf
