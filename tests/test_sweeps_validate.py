"""Host validation with ttnn's own TensorSpec under the machine's mock cluster (real ttnn, child process)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

from sweeps.profiles import get_profile
from sweeps.validate import shard_bytes_per_core, static_problems, validate_tensors
from tests.conftest import ADD_SWEEP, DEEPSEEK, ROOT
from tracer.args import canonical_arguments
from tracer.store import read_inputs


def _traced_tensors():
    tensors = []
    for entry in read_inputs([str(ADD_SWEEP)]):
        canonical = canonical_arguments(entry.arguments)
        for value in canonical["args"] + list(canonical["kwargs"].values()):
            if isinstance(value, dict) and "tensor" in value:
                tensors.append(value["tensor"])
    return tensors


def test_every_traced_tensor_is_valid_on_its_machine_and_rebuilt_configs_equal_the_traced_ones():
    tensors = _traced_tensors()
    assert len(tensors) == 25 and any(t["memory_config"]["shard_spec"] for t in tensors)
    assert validate_tensors(tensors, "galaxy") == [None] * len(tensors)
    # the round trip through ttnn's MemoryConfig, compared as canonical dicts via to_json()
    child = (
        "import json, sys, contextlib\n"
        "with contextlib.redirect_stdout(sys.stderr):\n    import ttnn\n"
        "from sweeps.memconfig import to_ttnn, from_ttnn\n"
        "mcs = json.loads(sys.stdin.read())\n"
        "print(json.dumps([from_ttnn(to_ttnn(ttnn, mc)) == mc for mc in mcs]))\n"
    )
    mcs = [t["memory_config"] for t in tensors]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TT_METAL_MOCK_CLUSTER_DESC_PATH": get_profile("galaxy").mock_cluster_path,
    }
    out = subprocess.run(
        [sys.executable, "-c", child], input=json.dumps(mcs), capture_output=True, text=True, env=env, timeout=300
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True] * len(mcs)


def test_invalid_configs_carry_ttnn_s_own_reason_or_ours():
    tensors = _traced_tensors()
    sharded = next(
        t
        for t in tensors
        if t["memory_config"]["shard_spec"] and t["memory_config"]["shard_spec"]["grid"][0]["end"] == [7, 8]
    )
    too_wide = copy.deepcopy(sharded)
    too_wide["shape"] = [1, 1, 32, 32 * 80]
    not_tiled = copy.deepcopy(sharded)
    not_tiled["memory_config"]["shard_spec"]["shape"] = [33, 17]
    reasons = validate_tensors([too_wide, not_tiled, sharded], "galaxy")
    assert reasons[0] == "Number of shards along width 80 must not exceed number of cores 72"
    assert "must be tile" in reasons[1] and reasons[2] is None
    # the same 8x9 grid does not exist on an N300 chip (8x8)
    assert "outside the n300 compute grid 8x8" in validate_tensors([sharded], "n300")[0]


def test_l1_capacity_is_checked_because_ttnn_does_not():
    huge = {
        "shape": [1, 1, 32768, 1024],
        "dtype": "BFLOAT16",
        "layout": "TILE",
        "placement": None,
        "storage": None,
        "memory_config": {
            "memory_layout": "HEIGHT_SHARDED",
            "buffer_type": "L1",
            "shard_spec": {
                "grid": [{"start": [0, 0], "end": [0, 0]}],
                "shape": [32768, 1024],
                "orientation": "ROW_MAJOR",
            },
        },
    }
    assert "needs 67108864 B of L1 per core" in static_problems(huge, get_profile("n150"))
    assert "needs 67108864 B" in validate_tensors([huge], "n150")[0]
    assert shard_bytes_per_core([224, 32], "BFLOAT8_B", "TILE") == 7616  # ttnn_api_facts.md §2


def test_unparsed_fields_are_invalid_with_the_reason():
    tensor = {
        "shape": [1, 32],
        "dtype": {"unparsed": "DataType.X", "reason": "unknown DataType"},
        "layout": "TILE",
        "memory_config": None,
        "placement": None,
        "storage": None,
    }
    assert validate_tensors([tensor], "n150") == ["dtype could not be read from the trace (unknown DataType)"]


def test_store_validate_command_lists_invalid_configs_per_machine(capsys):
    from broker.cli import main

    store = str(ROOT / "sweeps" / "data" / "sample_master.json")
    assert main(["store", "validate", store, "--json"]) == 0
    clean = json.loads(capsys.readouterr().out)
    assert clean["checked"] == 33 and clean["no_machine"] == []
    # the sample's one deliberately invalid config: a Galaxy-sized shard grid traced on N300
    assert [(r["config_hash"][:12], r["machine"]) for r in clean["invalid"]] == [("ec92cafe05c8", "n300")]
    assert main(["store", "validate", store, "--op", "add", "--machine", "n300", "--json"]) == 0
    forced = json.loads(capsys.readouterr().out)
    assert sorted((r["config_hash"][:12], r["machine"]) for r in forced["invalid"]) == [
        ("bba7c3d3966b", "n300"),
        ("ec92cafe05c8", "n300"),
    ]
    assert "outside the n300 compute grid" in forced["invalid"][0]["reason"]


def test_dram_sharded_weights_are_checked_against_the_dram_banks_not_the_compute_grid():
    weights = []
    for entry in read_inputs([str(DEEPSEEK)]):
        value = canonical_arguments(entry.arguments)["kwargs"].get("input_tensor_b")
        mc = value["tensor"]["memory_config"] if value else None
        if mc and mc["buffer_type"] == "DRAM" and mc["shard_spec"]:
            weights.append(value["tensor"])
    assert {r["end"][0] for t in weights for r in t["memory_config"]["shard_spec"]["grid"]} == {11}  # 12 banks
    assert all(static_problems(t, get_profile("galaxy")) is None for t in weights)
    assert validate_tensors(weights[:2], "galaxy") == [None, None]  # and ttnn's host TensorSpec takes them
    beyond = copy.deepcopy(weights[0])
    beyond["memory_config"]["shard_spec"]["grid"] = [{"start": [0, 0], "end": [12, 0]}]
    assert static_problems(beyond, get_profile("galaxy")) == (
        "shard grid core (12,0) is outside the galaxy DRAM bank grid 12x1"
    )
    assert "DRAM bank grid 8x1" in static_problems(weights[0], get_profile("p150"))  # Blackhole: 8 banks
