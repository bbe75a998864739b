"""`sweepctl repro`: standalone pytest files for two real DeepSeek-V3 Galaxy vectors (an L1
width-sharded rms_norm_post_all_gather and an L1-sharded all_gather_async), checked against what
the vector and its mesh plan say, then imported and run by pytest in a child process under the
Galaxy mock cluster: the inputs and golden are built, fabric is set, and the run stops at the
device open, which fails here (no device). Nothing past the open runs, so no device result exists."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from sweeps.catalogue import lookup
from sweeps.index import load
from sweeps.materialize import mesh_inputs, prepare
from sweeps.meshplan import mesh_plan
from sweeps.profiles import get_profile
from sweeps.suites import Selection, expand
from tests.conftest import DEEPSEEK, ROOT
from workers.repro import render, variable

SHARDED = "6174ae5e9a91"  # rms_norm_post_all_gather: two L1 width-sharded inputs, a program config grid
CCL = "0c6ccd31135e"  # all_gather_async over cluster axis 1, its input L1 height-sharded


def flat(text: str) -> str:
    """Code without layout: no whitespace, no trailing commas of arguments split over lines."""
    return re.sub(r",([)\]}])", r"\1", re.sub(r"\s+", "", text))


def check_content(text: str, vector: dict) -> None:
    """The file opens the vector's planned mesh and sends each input exactly as traced."""
    plan = mesh_plan(get_profile(vector["machine"]), vector)
    code = flat(text.split("\n# the vector exactly as sweepctl ran it")[0])  # the code, not the VECTOR data
    opened = (
        f"ttnn.open_mesh_device(ttnn.MeshShape({plan.mesh_shape[0]},{plan.mesh_shape[1]}),"
        f"l1_small_size={plan.l1_small_size},dispatch_core_config=ttnn.DispatchCoreConfig("
        f"ttnn.DispatchCoreType.{plan.dispatch_core_type},ttnn.DispatchCoreAxis.{plan.dispatch_core_axis}))"
    )
    assert plan.fabric is not None and plan.submesh_shape is None
    fabric_on = code.index(f"ttnn.set_fabric_config(ttnn.FabricConfig.{plan.fabric})")
    assert fabric_on < code.index(opened) < code.index("ttnn.close_mesh_device(whole)")
    assert code.rindex("ttnn.set_fabric_config(ttnn.FabricConfig.DISABLED)") > code.index("ttnn.close_mesh_device")
    prepared = prepare(None, lookup(vector["op"]), vector)
    sent = mesh_inputs(lookup(vector["op"]), vector, prepared, plan.shape)
    starts = {slot: code.index(f"{variable(slot)}=ttnn.from_torch(data.inputs['{slot}'],") for slot in sent}
    ends = sorted([*starts.values(), code.index("defcall():")])
    for slot, tensor in prepared.tensors.items():
        call = code[starts[slot] : next(e for e in ends if e > starts[slot])]  # this input's from_torch
        assert f"dtype=ttnn.DataType.{tensor['dtype']},layout=ttnn.Layout.{tensor['layout']},device=mesh," in call
        mc = tensor["memory_config"]
        kind = f"ttnn.TensorMemoryLayout.{mc['memory_layout']},ttnn.BufferType.{mc['buffer_type']}"
        assert f"memory_config=ttnn.MemoryConfig({kind}" in call
        if mc["shard_spec"] is not None:
            spec = mc["shard_spec"]
            ranges = ",".join(
                f"ttnn.CoreRange(ttnn.CoreCoord({r['start'][0]},{r['start'][1]}),ttnn.CoreCoord({r['end'][0]},{r['end'][1]}))"
                for r in spec["grid"]
            )
            assert f"ttnn.ShardSpec(ttnn.CoreRangeSet([{ranges}]),{flat(str(spec['shape']))}," in call
        placements = ",".join("ttnn.PlacementReplicate()" if d is None else f"ttnn.PlacementShard({d})"
                              for d in sent[slot].dims)  # fmt: skip
        assert f"ttnn.MeshMapperConfig([{placements}],ttnn.MeshShape({flat(str(list(sent[slot].shape)))}))" in call
    assert f"return{vector['op']}(" in code


def test_repro_files_for_a_sharded_and_a_ccl_galaxy_vector_run_up_to_the_device_open(tmp_path):
    ccl_file = tmp_path / "ccl_repro.py"
    written = subprocess.run(
        [sys.executable, "-m", "broker.cli", "repro", CCL, "--store", str(DEEPSEEK), "-o", str(ccl_file)],
        capture_output=True, text=True, cwd=ROOT, timeout=180,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr
    assert written.stdout == "" and ccl_file.exists()
    vectors = {v.id: v.decoded() for v in expand(load(str(DEEPSEEK)), Selection()).vectors}
    ccl = next(v for i, v in vectors.items() if i.startswith(CCL))
    sharded = next(v for i, v in vectors.items() if i.startswith(SHARDED))
    sharded_file = tmp_path / "sharded_repro.py"
    sharded_file.write_text(render(sharded, f"store {DEEPSEEK}", ["sweepctl", "repro", SHARDED], sharded_file.name))

    ccl_text = ccl_file.read_text()
    check_content(ccl_text, ccl)
    check_content(sharded_file.read_text(), sharded)
    code = flat(ccl_text)
    kwargs = ccl["kwargs"]
    for expected in (f"cluster_axis={kwargs['cluster_axis']},dim={kwargs['dim']},",
                     f"multi_device_global_semaphore=[semaphore(mesh),semaphore(mesh)],num_links={kwargs['num_links']},"
                     f"topology=ttnn.Topology.{kwargs['topology']['value']})"):  # fmt: skip
        assert expected in code
    assert f"sweepctl repro {CCL} --store {DEEPSEEK} -o {ccl_file}" in ccl_text  # how to write it again

    env = {**os.environ, "TT_METAL_MOCK_CLUSTER_DESC_PATH": get_profile("galaxy").mock_cluster_path,
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider", str(sharded_file), str(ccl_file)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    out = ran.stdout
    assert ran.returncode == 1, out[-3000:]
    for vector, name in ((sharded, "sharded_repro.py::test_rms_norm_post_all_gather"),
                         (ccl, "ccl_repro.py::test_all_gather_async")):  # fmt: skip
        assert f"ERROR {name}" in out  # an error in the mesh fixture, at the device open
        opdef = lookup(vector["op"])
        plan = mesh_plan(get_profile("galaxy"), vector)
        sent = mesh_inputs(opdef, vector, prepare(None, opdef, vector), plan.shape)
        for slot, mesh_input in sent.items():  # the data fixture built the sweep's inputs first
            assert f"input {slot}: {list(mesh_input.data.shape)} {mesh_input.data.dtype}" in out
    assert out.count(">           whole = ttnn.open_mesh_device(") == 2
    assert "warm-up" not in out and "PCC" not in out  # nothing ran past the open
