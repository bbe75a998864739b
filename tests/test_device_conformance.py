"""What the ttnn device backend would do on N150, N300, T3K, Galaxy, P150 and P300, checked without
hardware: one child process per machine profile under its mock cluster (tests/conformance.py,
whose docstring says what it checks and what stands in for the device: a recording wrapper around
the real ttnn module intercepts only open/close of the mesh and `from_torch(device=...)`; nothing
here is a device result).

The vectors: every config of every real store in tests/data (tests/corpus.py) on its traced
machine and on every profile as `--machine` puts it, plus hand-made ones for the mesh shapes and
collectives the stores lack (1x8 on a T3K, 8x4 and 1x32 on a Galaxy, 2x1 on an N300, Ring and
Linear collectives, HOST tensors). The counts of real placements and mesh shapes covered per
profile are printed (`pytest -s`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgpack
import pytest

from sweeps.nightly import DRAM, tensor
from sweeps.profiles import L1_SMALL_SIZE, PROFILES, MachineProfile
from sweeps.suites import Selection, expand
from sweeps.vector import make_vector
from tests import conformance, corpus
from workers.recovery import health_check_vector

ROOT = Path(__file__).resolve().parents[1]


def _placed(shape: list[int], placements: list[str], distribution: list[int], storage: str = "DEVICE") -> dict:
    t = tensor(shape, "BFLOAT16", DRAM)
    t["tensor"]["placement"] = {"placements": placements, "distribution_shape": distribution, "mesh_shape": None}
    t["tensor"]["storage"] = storage
    return t


def _gather(machine: str, mesh: tuple[int, int], topology: str, op: str = "ttnn.experimental.all_gather_async",
            axis: int | None = 1) -> dict:  # fmt: skip
    kwargs = {"dim": 3, "topology": {"enum": "Topology", "value": topology},
              "multi_device_global_semaphore": [{"runtime_object": "global_semaphore"}] * 2}  # fmt: skip
    if axis is not None:
        kwargs["cluster_axis"] = axis
    chips = mesh[0] * mesh[1]
    return make_vector(op, "conformance", machine, list(mesh), [_placed([1, 1, 32, 64], ["replicate"], [chips])],
                       kwargs, 60.0)  # fmt: skip


def _add(machine: str, mesh: tuple[int, int], storage: str = "DEVICE", grid_x: int | None = None) -> dict:
    chips = mesh[0] * mesh[1]
    a = _placed([1, 1, 32, 64], ["shard(3)"], [chips])  # what ShardTensorToMesh records: 1-D over every chip
    b = _placed([1, 2, 32, 64], ["shard(1)", "shard(-3)"], list(mesh), storage)  # one dim on both axes
    kwargs = {}
    if grid_x is not None:  # a program config using core x = grid_x - 1
        kwargs["program_config"] = {"object": "P", "fields": {"compute_with_storage_grid_size": {"x": grid_x, "y": 2}}}
    return make_vector("ttnn.add", "conformance", machine, list(mesh), [a, b], kwargs, 30.0)


# traced mesh shapes the real stores lack, per machine (issue 16 item 3)
EXTRA_MESHES = {"t3k": [(1, 8), (1, 4), (4, 2)], "galaxy": [(8, 4), (1, 32), (1, 8), (1, 1)], "n300": [(2, 1), (1, 1)],
                "p300": [(2, 1)]}  # fmt: skip


def synthetic(profile: MachineProfile) -> list[dict]:
    vectors = [health_check_vector(profile)]
    for mesh in [profile.mesh_shape, *EXTRA_MESHES.get(profile.name, [])]:
        vectors += [_add(profile.name, mesh), _add(profile.name, mesh, storage="HOST")]
        if mesh[0] * mesh[1] > 1:
            axis = 1 if mesh[1] > 1 else 0
            vectors += [_gather(profile.name, mesh, "Linear", axis=axis),
                        _gather(profile.name, mesh, "Ring", axis=axis),
                        _gather(profile.name, mesh, "Linear", axis=None),
                        _gather(profile.name, mesh, "Linear", "ttnn.reduce_scatter", axis=axis),
                        _gather(profile.name, mesh, "Linear", "ttnn.experimental.reduce_scatter_minimal_async",
                                axis=1 - axis)]  # fmt: skip
    return vectors


def topologies(profile: MachineProfile) -> list[list[dict]]:
    """Sequences of vectors one executor runs: each open, reopen and close the backend makes."""
    whole = profile.mesh_shape
    sequence = [_add(profile.name, whole), _add(profile.name, (1, 1))]
    if profile.chips > 1:
        sequence += [_gather(profile.name, whole, "Linear"), _gather(profile.name, whole, "Ring"),
                     _add(profile.name, whole)]  # fmt: skip
    if len(profile.dispatch) > 1:  # a grid only the second dispatch holds: a reopen with it
        sequence.append(_add(profile.name, whole, grid_x=profile.dispatch[1].grid[0]))
    return [sequence]


def real_vectors(workdir: Path) -> dict[str, dict[str, dict]]:
    """machine -> vector id -> vector: every store's runnable configs on their traced machine and on
    every profile (`--machine`)."""
    from sweeps.index import load as load_index

    out: dict[str, dict[str, dict]] = {name: {} for name in PROFILES}
    for name in corpus.STORES:
        index = load_index(str(corpus.store_path(name, workdir)))
        for selection in [Selection(), *(Selection(machine=m) for m in PROFILES)]:
            expansion = expand(index, selection)
            for encoded in expansion.vectors:
                if encoded.machine in out and encoded.id not in expansion.not_run:
                    out[encoded.machine][encoded.id] = encoded.decoded()
    return out


def run_child(machine: str, job: dict, env: dict[str, str] | None = None) -> dict:
    env = {**os.environ, "TT_METAL_MOCK_CLUSTER_DESC_PATH": PROFILES[machine].mock_cluster_path, **(env or {}),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    with tempfile.TemporaryDirectory() as cwd:  # ttnn.set_fabric_config writes generated/fabric/ into it
        done = subprocess.run([sys.executable, "-m", "tests.conformance"], input=msgpack.packb(job, use_bin_type=True),
                              capture_output=True, env=env, cwd=cwd, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    line = next(line for line in done.stdout.decode().splitlines() if line.startswith(conformance.MARK))
    return json.loads(line[len(conformance.MARK) :])


def expected_events(plans: list[list]) -> list[list]:
    """tt-metal's sequence (sweep_utils/ccl_common.py device_context): fabric DISABLED, then the
    config, then open; after the close, DISABLED. A plan with the open key of the mesh already
    open reuses it; no mesh is opened while another is live."""
    events, current = [], None
    for mesh, fabric, dispatch_type, axis in plans:
        key = (tuple(mesh), fabric, dispatch_type, axis)
        if key == current:
            continue
        if current is not None:
            events.append(["close", list(current[0])])
            events += [["fabric", "DISABLED"]] if current[1] else []
        if fabric:
            events += [["fabric", "DISABLED"], ["fabric", fabric]]
        events.append(["open", list(mesh), L1_SMALL_SIZE, dispatch_type, axis, fabric or "DISABLED", 0])
        current = key
    events.append(["close", list(current[0])])
    return events + ([["fabric", "DISABLED"]] if current[1] else [])


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    workdir = tmp_path_factory.mktemp("conformance")
    os.environ.setdefault("SWEEPCTL_CACHE_DIR", str(workdir / "cache"))
    real = real_vectors(workdir)
    jobs = {}
    for name, profile in PROFILES.items():
        items = [{"vector": v, "from": f"{v['op']} {vid[:12]}", "real": 1} for vid, v in real[name].items()]
        made = synthetic(profile)
        items += [{"vector": v, "from": f"{v['op']} on {v['mesh_shape']} (made)", "real": 0} for v in made]
        runs = [_add(name, profile.mesh_shape, storage="HOST")]
        runs += [_gather(name, profile.mesh_shape, "Linear")] if profile.chips > 1 else []
        jobs[name] = {"machine": name, "vectors": items, "topologies": topologies(profile), "runs": runs}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run_child, name, job) for name, job in jobs.items()}
        visible = pool.submit(run_child, "t3k", {"machine": "t3k", "vectors": [], "topologies": []},
                              {"TT_VISIBLE_DEVICES": "0"})  # fmt: skip
        out = {name: f.result() for name, f in futures.items()}
    out["t3k visible 0"] = visible.result()
    for name in PROFILES:
        counts = out[name]["counts"]
        real_meshes = sorted({tuple(v["mesh_shape"]) for v in real[name].values()})
        print(f"\n{name}: {counts['placements']} real tensor placements ({counts['layouts']} distinct layouts, "
              f"{counts['collective_inputs']} collective inputs checked chip by chip), {counts['vectors']} vectors, "
              f"real mesh shapes {real_meshes}, all mesh shapes {counts['meshes']}")  # fmt: skip
    return out


@pytest.mark.parametrize("machine", list(PROFILES))
def test_every_chip_gets_its_data_and_every_mesh_fits_its_plan(results, machine):
    found = results[machine]
    assert found["problems"] == []
    assert found["counts"]["vectors"] > 0 and found["counts"]["layouts"] > 0
    if PROFILES[machine].chips > 1:
        assert found["counts"]["collective_inputs"] > 0


@pytest.mark.parametrize("machine", list(PROFILES))
def test_fabric_is_set_before_open_and_cleared_after_close_with_the_profiles_dispatch(results, machine):
    profile = PROFILES[machine]
    for run in results[machine]["topologies"]:
        assert run["events"] == expected_events(run["plans"])
        opened = [e for e in run["events"] if e[0] == "open"]
        assert {(e[3], e[4]) for e in opened} <= {(d.type, d.axis) for d in profile.dispatch}
        assert all(tuple(e[1]) in profile.mesh_shapes for e in opened)
        if profile.chips > 1:  # a Ring collective opens the ring fabric, the rest the mesh's own
            assert {e[5] for e in opened} == {"FABRIC_1D_RING", "FABRIC_1D" if 1 in profile.mesh_shape else "FABRIC_2D"}
        else:
            assert {e[5] for e in opened} == {"DISABLED"}


@pytest.mark.parametrize("machine", list(PROFILES))
def test_each_op_call_gets_fresh_semaphores_and_a_synchronize_and_the_golden_none(results, machine):
    """Whole vectors through DeviceBackend.run with the op recorded (not a device result: only the
    order of calls, and that sweepctl's own code ran through without an ERROR)."""
    for run in results[machine]["runs"]:
        assert run["status"] != "ERROR", run["message"]
        calls = [e for e in run["events"] if e[0] != "send"]
        ops = [n for n, e in enumerate(calls) if e[0] == "op"]
        assert len(ops) == 2 and all(calls[n + 1] == ["sync"] for n in ops)  # warm-up, then timed
        spans = ((0, ops[0]), (ops[0], ops[1]))
        made = [[e[1] for e in calls[start:end] if e[0] == "semaphore"] for start, end in spans]
        assert [calls[n][1] for n in ops] == made  # each call its own, made for it; none for the golden
        assert not set(made[0]) & set(made[1])
        assert len(calls) == ops[1] + 2


@pytest.mark.parametrize("machine", list(PROFILES))
def test_pinned_machine_facts(results, machine):
    profile = PROFILES[machine]
    facts = results[machine]["facts"]
    assert facts["dispatch"] == list(profile.native_dispatch)  # what DispatchCoreConfig() resolves to there
    assert (facts["chips"], facts["pcie"], facts["arch"]) == (profile.chips, profile.pcie_devices, profile.arch)


def test_tt_visible_devices_selects_pcie_devices_not_chips(results):
    """On a T3K, TT_VISIBLE_DEVICES=0 is one N300 card: 2 chips."""
    facts = results["t3k visible 0"]["facts"]
    assert (facts["chips"], facts["pcie"]) == (PROFILES["t3k"].chips_per_pcie_device, 1)


def test_a_mesh_the_machine_cannot_open_is_not_run_with_the_shapes_it_opens():
    assert PROFILES["galaxy"].mesh_misfit((2, 16)) == (
        "traced mesh 2x16 fits no mesh a galaxy opens (4x8, 8x4, 1x32, 32x1)"
    )
    assert PROFILES["galaxy"].mesh_for((8, 4)) == (8, 4) and PROFILES["galaxy"].mesh_for((2, 2)) == (4, 8)
    assert PROFILES["t3k"].mesh_for((1, 8)) == (1, 8) and PROFILES["n300"].mesh_for((2, 1)) == (2, 1)


def test_a_reset_names_only_the_workers_pcie_devices_and_a_galaxy_resets_whole(monkeypatch):
    from workers.recovery import RESET_ENV, reset_command

    monkeypatch.delenv(RESET_ENV, raising=False)
    assert reset_command(PROFILES["t3k"], "ttnn", [4, 5, 6, 7]) == ["tt-smi", "-r", "4,5,6,7"]
    assert reset_command(PROFILES["n300"], "ttnn", [1]) == ["tt-smi", "-r", "1"]
    assert reset_command(PROFILES["galaxy"], "ttnn", list(range(32))) == ["tt-smi", "-glx_reset_auto"]
    assert reset_command(PROFILES["n300"], "emulated", [0]) == []


def _sharded(machine: str, mesh: tuple[int, int], end: tuple[int, int]) -> dict:
    spec = {"grid": [{"start": [0, 0], "end": list(end)}], "shape": [32, 32], "orientation": "ROW_MAJOR"}
    memory = {"memory_layout": "HEIGHT_SHARDED", "buffer_type": "L1", "shard_spec": spec}
    t = tensor([1, 1, 32 * (end[0] + 1) * (end[1] + 1), 32], "BFLOAT16", memory)
    return make_vector("ttnn.add", "conformance", machine, list(mesh), [t, t], {}, 30.0)


def test_the_plan_picks_the_dispatch_whose_grid_holds_every_core_and_refuses_a_vector_needing_two():
    from sweeps.meshplan import MeshPlanError, mesh_plan

    galaxy = PROFILES["galaxy"]
    assert mesh_plan(galaxy, _sharded("galaxy", (4, 8), (6, 9))).dispatch_core_axis == "COL"  # y = 9: 7x10
    assert mesh_plan(galaxy, _sharded("galaxy", (4, 8), (7, 8))).dispatch_core_axis == "ROW"  # x = 7: 8x9
    assert mesh_plan(galaxy, _add("galaxy", (4, 8), grid_x=8)).dispatch_core_axis == "ROW"  # a program config's grid
    two = _sharded("galaxy", (4, 8), (6, 9))
    two["kwargs"]["program_config"] = {"fields": {"compute_with_storage_grid_size": {"x": 8, "y": 8}}}
    with pytest.raises(MeshPlanError, match=r"core \(7,9\) is outside every galaxy compute grid"):
        mesh_plan(galaxy, two)
    n300 = mesh_plan(PROFILES["n300"], _sharded("n300", (1, 2), (7, 7)))
    assert (n300.dispatch_core_type, n300.grid) == ("ETH", (8, 8))  # ETH keeps the full 8x8


def test_the_plan_opens_the_whole_machine_with_the_topologys_fabric():
    from sweeps.meshplan import mesh_plan

    galaxy, t3k, n150 = PROFILES["galaxy"], PROFILES["t3k"], PROFILES["n150"]
    plan = mesh_plan(galaxy, _add("galaxy", (1, 8)))
    assert (plan.mesh_shape, plan.submesh_shape, plan.fabric) == ((4, 8), (1, 8), "FABRIC_2D")
    assert mesh_plan(galaxy, _gather("galaxy", (8, 4), "Ring")).fabric == "FABRIC_1D_RING"
    plan = mesh_plan(t3k, _gather("t3k", (1, 8), "Linear"))
    assert (plan.mesh_shape, plan.submesh_shape, plan.fabric) == ((1, 8), None, "FABRIC_1D")
    assert mesh_plan(n150, _add("n150", (1, 1))).fabric is None  # fabric on one chip hangs (tt-metal #55519)
    assert mesh_plan(galaxy, _add("galaxy", (4, 8))).l1_small_size == L1_SMALL_SIZE == 79104


def test_the_judged_chip_is_one_that_ran_the_op_and_its_peers_got_the_same_inputs():
    from sweeps.catalogue import lookup
    from sweeps.materialize import judged_chips

    add, fill = lookup("ttnn.add"), lookup("ttnn.experimental.paged_fill_cache")
    vector = _add("galaxy", (4, 8))
    assert judged_chips(add, vector, (4, 8)) == (0, [31])
    assert judged_chips(add, vector, (4, 8), every=True) == (0, list(range(1, 32)))
    on_one = {"kwargs": {"mesh_coords": {"mesh_coordinates": [[2, 3]]}}}  # a Galaxy fills one chip's cache
    assert judged_chips(fill, on_one, (4, 8)) == (19, [])
    scatter = lookup("ttnn.reduce_scatter")  # chip i keeps chunk i of its ring
    assert judged_chips(scatter, _gather("galaxy", (4, 8), "Linear", "ttnn.reduce_scatter", 1), (4, 8)) == (0, [24])
    assert judged_chips(scatter, _gather("galaxy", (4, 8), "Linear", "ttnn.reduce_scatter", 0), (4, 8)) == (0, [7])
    assert judged_chips(scatter, _gather("galaxy", (4, 8), "Linear", "ttnn.reduce_scatter", None), (4, 8)) == (0, [])
