"""Config objects reach the op as ttnn objects, never plain maps (sweeps/configobjects.py).

Every config object of every store in tests/data is built by `substitute` (the step both backends
share) under its vector's machine's mock cluster, one child process per descriptor, and its fields
read back from the built object equal the traced ones; `sweepctl repro`'s constructor code builds
the same object. Each class ttnn prints, traced here or not, goes object -> repr -> the tracer's
reading -> object with its fields intact (linear's golden applies the rebuilt fused activation).
ttnn.linear binds the built objects (it gets as far as "must be on device" with host tensors) where
the plain maps were a TypeError inside the op call. A field that does not convert is ERROR naming
class and field; a class or field sweepctl does not know is NOT_RUN at expansion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import msgpack
import pytest

from sweeps import configobjects, status
from sweeps.configobjects import ConfigObjectError
from sweeps.index import load
from sweeps.profiles import get_profile
from sweeps.suites import Selection, expand
from tests.conftest import ROOT, write_json
from tests.corpus import STORES, expand_store

EXTRA = ROOT / "tests" / "data" / "ttnn_master_model_traced_extra.json"

CHILD = """
import contextlib, json, sys
with contextlib.redirect_stdout(sys.stderr):
    import ttnn
import msgpack
import torch
from collections import defaultdict
from sweeps import configobjects
from sweeps.catalogue import lookup
from sweeps.materialize import substitute, to_ttnn_value
from workers.emulated import EmulatedBackend
from workers.repro import config_objects, one_line

job = msgpack.unpackb(sys.stdin.buffer.read())
built = []
for number, vector in enumerate(job["vectors"]):
    args, kwargs = substitute(ttnn, vector, defaultdict(lambda: None), lambda value: None)
    code = config_objects(vector)
    for slot, (name, fields) in configobjects.objects(vector["inputs"], vector["kwargs"]).items():
        obj = args[int(slot)] if slot.isdigit() else kwargs[slot]
        rendered = eval(one_line(code[slot]), {"ttnn": ttnn})
        built.append({"vector": number, "slot": slot, "class": name, "type": type(obj).__name__,
                      "back": configobjects.read_back(name, obj), "rendered": configobjects.read_back(name, rendered)})
out = {"built": built}
if job.get("linear") is not None:  # a traced linear: the built objects bind, the plain maps did not
    vector = job["linear"]
    host = ttnn.from_torch(torch.randn(32, 32), dtype=ttnn.bfloat16, layout=ttnn.TILE_LAYOUT)
    _, kwargs = substitute(ttnn, vector, defaultdict(lambda: None), lambda value: None)
    plain = {k: to_ttnn_value(ttnn, vector["kwargs"][k], None) for k in ("program_config", "compute_kernel_config")}
    out["linear"] = {}
    for name, given in (("built", {k: kwargs[k] for k in plain}), ("plain", plain)):
        try:
            ttnn.linear(host, host, **given)
        except Exception as exc:
            out["linear"][name] = [type(exc).__name__, str(exc)]
if job.get("roundtrip"):  # every class ttnn prints: object -> repr -> the tracer's reading -> object
    from tracer.args import value_from_repr
    from sweeps import adapters
    C, U = ttnn.CoreCoord, ttnn.UnaryWithParam
    R = ttnn.CoreRangeSet([ttnn.CoreRange(C(1, 0), C(3, 9)), ttnn.CoreRange(C(5, 0), C(6, 9))])
    samples = [
        ttnn.MatmulMultiCoreReuseProgramConfig(compute_with_storage_grid_size=C(7, 6), in0_block_w=2,
            out_subblock_h=1, out_subblock_w=2, per_core_M=3, per_core_N=4),
        ttnn.MatmulMultiCoreReuseMultiCastProgramConfig(compute_with_storage_grid_size=C(8, 4), in0_block_w=2,
            out_subblock_h=1, out_subblock_w=2, out_block_h=3, out_block_w=4, per_core_M=3, per_core_N=4,
            transpose_mcast=True, fused_activation=U(ttnn.UnaryOpType.RELU), fuse_batch=False),
        ttnn.MatmulMultiCoreReuseMultiCast1DProgramConfig(compute_with_storage_grid_size=C(8, 2), in0_block_w=2,
            out_subblock_h=1, out_subblock_w=2, per_core_M=1, per_core_N=4, fuse_batch=True,
            fused_activation=U(ttnn.UnaryOpType.SILU), mcast_in0=True, gather_in0=True, hop_cores=R,
            untilize_out=True),
        ttnn.MatmulMultiCoreReuseMultiCastDRAMShardedProgramConfig(in0_block_w=1, per_core_M=1, per_core_N=8,
            fused_activation=U(ttnn.UnaryOpType.GELU, 1.0), num_workers_per_dram_bank=2),
        ttnn.SoftmaxShardedMultiCoreProgramConfig(compute_with_storage_grid_size=C(8, 8), subblock_w=2, block_h=4,
            block_w=8),
        ttnn.SDPAProgramConfig(compute_with_storage_grid_size=C(8, 8), sub_core_grids=R, q_chunk_size=64,
            k_chunk_size=128, exp_approx_mode=True, max_cores_per_head_batch=8, max_k_splits=2,
            matmul_math_fidelity=ttnn.MathFidelity.HiFi2, segmented_accumulation=True),
        ttnn.LayerNormShardedMultiCoreProgramConfig(compute_with_storage_grid_size=C(4, 7), subblock_w=2, block_h=3,
            block_w=4, inplace=True, use_welford=True),
    ]
    out["roundtrip"] = []
    for obj in samples:
        name = type(obj).__name__
        value = value_from_repr(name, repr(obj))
        built = configobjects.build(ttnn, name, value["fields"])
        out["roundtrip"].append([name, configobjects.unknown([], {"p": value}), configobjects.read_back(name, obj),
                                 configobjects.read_back(name, built)])
        if name == "MatmulMultiCoreReuseMultiCastProgramConfig":  # linear's golden applies its fused RELU
            a, b = torch.randn(1, 1, 32, 64), torch.randn(1, 1, 64, 96)
            out["fused_relu"] = torch.equal(adapters.linear(ttnn, [a, b], {"program_config": built}, {}),
                                            torch.relu(a @ b))
if job.get("broken") is not None:
    vector = job["broken"]
    out["broken"] = EmulatedBackend(ttnn, vector["machine"]).run(lookup(vector["op"]), vector)
print("RESULT", json.dumps(out))
"""


@pytest.fixture(scope="module")
def store_vectors(tmp_path_factory) -> list[dict]:
    """Every vector of every store in the corpus that carries a config object."""
    work = tmp_path_factory.mktemp("stores")
    previous = os.environ.get("SWEEPCTL_CACHE_DIR")
    os.environ["SWEEPCTL_CACHE_DIR"] = str(work / "cache")
    try:
        vectors = [d for name in STORES for _, _, d in expand_store(name, work)]
    finally:
        if previous is None:
            os.environ.pop("SWEEPCTL_CACHE_DIR", None)
        else:
            os.environ["SWEEPCTL_CACHE_DIR"] = previous
    return [v for v in vectors if configobjects.objects(v["inputs"], v["kwargs"])]


def _child(machine: str, job: dict) -> dict:
    env = {**os.environ, "TT_METAL_MOCK_CLUSTER_DESC_PATH": get_profile(machine).mock_cluster_path}
    out = subprocess.run([sys.executable, "-c", CHILD], input=msgpack.packb(job, use_bin_type=True),
                         capture_output=True, cwd=ROOT, env=env, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-3000:]
    (line,) = [x for x in out.stdout.decode().splitlines() if x.startswith("RESULT ")]  # ttnn logs to stdout too
    return json.loads(line[len("RESULT ") :])


def _broken(vector: dict) -> dict:
    """The vector with its compute kernel config's fidelity a name MathFidelity does not have."""
    broken = json.loads(json.dumps(vector))
    broken["kwargs"]["compute_kernel_config"]["math_fidelity"] = "MathFidelity.HiFi9"
    return broken


def test_every_config_object_of_every_store_builds_into_its_ttnn_object(store_vectors):
    by_machine: dict[str, list[dict]] = {}
    for vector in store_vectors:
        by_machine.setdefault(vector["machine"], []).append(vector)
    linear = next(v for v in store_vectors if v["op"] == "ttnn.linear" and "program_config" in v["kwargs"])
    kernel = next(v for v in store_vectors if v["op"] == "ttnn.rms_norm" and "compute_kernel_config" in v["kwargs"])
    counts: Counter[str] = Counter()
    for machine, vectors in sorted(by_machine.items()):
        extra = {"linear": linear, "broken": _broken(kernel), "roundtrip": True} if machine == linear["machine"] else {}
        out = _child(machine, {"vectors": vectors, **extra})
        expected = [(n, slot, name, fields) for n, v in enumerate(vectors)
                    for slot, (name, fields) in configobjects.objects(v["inputs"], v["kwargs"]).items()]  # fmt: skip
        assert len(out["built"]) == len(expected)
        for got, (number, slot, name, fields) in zip(out["built"], expected, strict=True):
            assert (got["vector"], got["slot"], got["type"]) == (number, slot, name)  # a ttnn object of its class
            traced = json.loads(json.dumps(configobjects.plain(name, fields)))
            assert {k: got["back"][k] for k in traced} == traced, (machine, name, fields)  # every traced field
            assert got["rendered"] == got["back"]  # repro's constructor code builds the same object
            counts[name] += 1
        if extra:
            plain, built = out["linear"]["plain"], out["linear"]["built"]
            assert plain[0] == "TypeError" and "incompatible function arguments" in plain[1]  # the op call refused it
            assert built[0] == "RuntimeError" and "must be on device" in built[1]  # bound; stopped at the device
            broken = out["broken"]  # on the emulated backend, through substitute: ours, named
            assert broken["status"] == status.ERROR, broken
            said = "ConfigObjectError: WormholeComputeKernelConfig.math_fidelity: ttnn.MathFidelity has no member HiFi9"
            assert broken["message"].startswith(said + " [sweeps/configobjects.py:"), broken["message"]
            assert len(out["roundtrip"]) == 7 and out["fused_relu"] is True
            for name, unknown, made, rebuilt in out["roundtrip"]:  # classes no store here traces, too
                assert unknown is None and rebuilt == made, name
    # what the stores in tests/data hold (DeepSeek-V3's linears, norms and reductions; the extra store's SDPA)
    assert counts["WormholeComputeKernelConfig"] >= 30 and counts["SDPAProgramConfig"] >= 4
    assert counts["MatmulMultiCoreReuseMultiCastDRAMShardedProgramConfig"] > 0
    assert counts["MatmulMultiCoreReuseMultiCastBatchedDRAMShardedProgramConfig"] > 0
    assert counts["LayerNormShardedMultiCoreProgramConfig"] > 0 and counts["LayerNormDefaultProgramConfig"] > 0
    print("config objects built per class:", dict(sorted(counts.items())))


def _weight(layout: str, buffer: str) -> dict:
    mc = {"memory_layout": layout, "buffer_type": buffer, "shard_spec": None}
    return {"tensor": {"shape": [1, 16, 128, 512], "dtype": "BFLOAT8_B", "layout": "TILE", "memory_config": mc}}


def test_bare_maps_are_named_from_their_fields():
    """Traces write compute kernel configs, DRAM-sharded matmul configs and core coordinates without
    a class name; the two DRAM-sharded classes share their fields, the batched one takes a
    HEIGHT_SHARDED DRAM weight."""
    kernel = {"math_fidelity": "MathFidelity.LoFi", "math_approx_mode": "False", "fp32_dest_acc_en": True}
    matmul = {"in0_block_w": 4, "per_core_M": 1, "per_core_N": 2, "fused_activation": None}
    a = _weight("INTERLEAVED", "DRAM")
    found = configobjects.objects([a, _weight("HEIGHT_SHARDED", "DRAM"), {"x": 4, "y": 1}],
                                  {"compute_kernel_config": kernel, "program_config": matmul})  # fmt: skip
    assert {slot: name for slot, (name, _) in found.items()} == {
        "2": "CoreCoord",
        "compute_kernel_config": "WormholeComputeKernelConfig",
        "program_config": "MatmulMultiCoreReuseMultiCastBatchedDRAMShardedProgramConfig",
    }
    width = configobjects.objects([a], {"input_tensor_b": _weight("WIDTH_SHARDED", "DRAM"), "program_config": matmul})
    assert width["program_config"][0] == "MatmulMultiCoreReuseMultiCastDRAMShardedProgramConfig"
    assert configobjects.plain("WormholeComputeKernelConfig", kernel) == {
        "math_fidelity": "LoFi", "math_approx_mode": False, "fp32_dest_acc_en": True}  # fmt: skip


def test_a_field_that_does_not_convert_names_class_and_field():
    good = {"compute_with_storage_grid_size": {"x": 8, "y": 8}, "q_chunk_size": 32, "k_chunk_size": 32,
            "exp_approx_mode": "false", "sub_core_grids": "{[1-0 - 3-9], [5-0 - 6-9]}"}  # fmt: skip
    assert configobjects.plain("SDPAProgramConfig", good)["sub_core_grids"] == (((1, 0), (3, 9)), ((5, 0), (6, 9)))
    for field, value, says in (("q_chunk_size", "wide", "'wide' is not an integer"),
                               ("exp_approx_mode", "maybe", "'maybe' is not a bool"),
                               ("compute_with_storage_grid_size", {"x": 8}, "is not a core coordinate"),
                               ("k_chunk_size", None, "None where ttnn needs a value")):  # fmt: skip
        with pytest.raises(ConfigObjectError, match=rf"^SDPAProgramConfig\.{field}: .*{says}"):
            configobjects.plain("SDPAProgramConfig", {**good, field: value})


def test_a_class_or_field_sweepctl_does_not_know_is_not_run_at_expansion(tmp_path):
    """Decided when the store is expanded (model_traced and all_cases), never a TypeError at run time."""
    store = json.loads(EXTRA.read_text(encoding="utf-8"))
    configs = store["operations"]["ttnn.transformer.scaled_dot_product_attention"]["configurations"]
    configs[0]["arguments"]["program_config"]["type"] = "SDPAFancyProgramConfig"
    configs[0]["arguments"]["program_config"]["value"] = configs[0]["arguments"]["program_config"]["value"].replace(
        "SDPAProgramConfig(", "SDPAFancyProgramConfig("
    )
    kernel = configs[1]["arguments"]["compute_kernel_config"]
    kernel["math_fidelity_boost"] = 1
    index = load(str(write_json(tmp_path / "store.json", store)))
    ops = ["ttnn.transformer.scaled_dot_product_attention"]
    for suite in ("model_traced", "all_cases"):
        expansion = expand(index, Selection(ops=ops, suite=suite))
        reasons = set(expansion.not_run.values())
        assert "argument program_config is a SDPAFancyProgramConfig, a config object sweepctl does not know" in reasons
        assert "argument compute_kernel_config: WormholeComputeKernelConfig field math_fidelity_boost is not known " \
               "to sweepctl" in reasons, suite  # fmt: skip
        assert len(reasons) == 2 and len(expansion.not_run) < len(expansion.vectors)


def test_an_object_traced_only_by_its_address_is_not_run_unless_sweepctl_creates_it(tmp_path):
    """`<X object at 0x...>` carries nothing to rebuild X from: passing None in its place would change
    the call, so the vector is NOT_RUN naming it; a global semaphore is made afresh per call instead."""
    store = json.loads(EXTRA.read_text(encoding="utf-8"))
    configs = store["operations"]["ttnn.transformer.scaled_dot_product_attention"]["configurations"]
    configs[0]["arguments"]["program_config"] = {
        "type": "SDPAProgramConfig", "value": "<ttnn._ttnn.operations.transformer.SDPAProgramConfig object at 0x7f3a>"
    }  # fmt: skip
    index = load(str(write_json(tmp_path / "store.json", store)))
    ops = ["ttnn.transformer.scaled_dot_product_attention"]
    for suite in ("model_traced", "all_cases"):
        reasons = set(expand(index, Selection(ops=ops, suite=suite)).not_run.values())
        assert reasons == {"argument program_config was traced only as a SDPAProgramConfig object address: "
                           "sweepctl cannot rebuild it"}, suite  # fmt: skip
    assert configobjects.unknown([], {"barrier_semaphore": {"runtime_object": "global_semaphore"},
                                      "multi": [{"runtime_object": "global_semaphore"}]}) is None  # fmt: skip
