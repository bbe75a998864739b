"""Suites and the catalogue over the real stores in tests/data and the shipped sample: every
config becomes a vector (runnable or NOT_RUN with a reason), nothing is dropped or defaulted."""

from __future__ import annotations

import copy
import json

import pytest

from sweeps import catalogue
from sweeps.catalogue import timeout_for
from sweeps.index import build, untraced
from sweeps.nightly import GRIDS
from sweeps.profiles import Routing, get_profile
from sweeps.suites import Selection, all_cases, count_all_cases, expand, model_traced, not_run_reason
from sweeps.vector import make_vector, payload, tensor_keys
from tests.conftest import ADD_SWEEP, DEEPSEEK, MINI, REGISTERED_OPS, ROOT, TRACER_EXAMPLES, write_json
from tracer.args import canonical_arguments
from tracer.errors import InputError
from tracer.machine import hardware_summary
from tracer.store import MasterStore, read_inputs

SAMPLE = ROOT / "sweeps" / "data" / "sample_master.json"
ISSUE_OPS = (
    "add multiply subtract matmul linear pad permute reshape transpose concat slice repeat embedding typecast softmax "
    "layer_norm rms_norm silu gelu relu sigmoid sigmoid_accurate exp rsqrt neg sum mean max argmax topk to_layout "
    "to_memory_config tilize_with_zero_padding untilize interleaved_to_sharded sharded_to_interleaved clamp where "
    "transformer.scaled_dot_product_attention experimental.rotary_embedding conv2d max_pool2d upsample all_gather "
    "reduce_scatter"
).split()


def _store(*paths) -> MasterStore:
    store = MasterStore()
    store.merge(read_inputs([str(p) for p in paths]))
    return store


def test_the_catalogue_covers_the_listed_ops_and_the_traced_ones():
    missing = [op for op in ISSUE_OPS if catalogue.lookup(f"ttnn.{op}") is None]
    assert missing == []
    store = _store(ADD_SWEEP, DEEPSEEK, MINI, SAMPLE, TRACER_EXAMPLES)  # every store in the repo
    assert [op for op in sorted(store.ops) if catalogue.lookup(op) is None] == []


def test_every_catalogue_op_is_a_registered_ttnn_op():
    tsv = REGISTERED_OPS.read_text().splitlines()
    registered = {line.split("\t")[0] for line in tsv[1:]}
    # defined in Python by ttnn (ttnn/operations/pool.py), so not registered, yet traced by models
    # and swept by tt-metal's global_avg_pool2d_model_traced module
    python_level = {"ttnn.global_avg_pool2d"}
    assert sorted(set(catalogue.CATALOGUE) - registered - python_level) == []


def test_test_ops_exist_only_behind_their_flag(monkeypatch):
    monkeypatch.delenv(catalogue.TEST_OPS_ENV, raising=False)
    assert catalogue.lookup("sweepctl.test.noop") is None
    monkeypatch.setenv(catalogue.TEST_OPS_ENV, "1")
    assert catalogue.lookup("sweepctl.test.noop").test_only


def test_threshold_is_that_of_the_least_precise_dtype():
    add = catalogue.lookup("ttnn.add")
    assert add.threshold_of([("input 0", "BFLOAT16"), ("output", "FLOAT32")]) == (
        catalogue.THRESHOLDS["BFLOAT16"],
        "input 0 BFLOAT16",
    )
    named = [("input 0", "BFLOAT16"), ("input 1", "BFLOAT4_B"), ("input 2", "BFLOAT8_B"), ("output", "BFLOAT4_B")]
    assert add.threshold_of(named) == (catalogue.THRESHOLDS["BFLOAT4_B"], "input 1 BFLOAT4_B")  # the first names it
    assert add.threshold_of([("input 0", "UINT32"), ("output", "UINT32")]) == (0.9999, "input 0 UINT32")


@pytest.mark.parametrize("paths", [(ADD_SWEEP,), (MINI,), (TRACER_EXAMPLES,), (SAMPLE,)], ids=lambda p: p[0].name)
def test_model_traced_turns_every_config_into_a_vector(paths):
    store = _store(*paths)
    expansion = model_traced(build(store), Selection())
    vectors = expansion.decoded()
    ids = {v["id"] for v in vectors}
    assert len(ids) == len(vectors) and ids == {v.id for v in expansion.vectors}
    for encoded, v in zip(expansion.vectors, vectors, strict=True):  # joined bytes == the checking walk's
        remade = make_vector(v["op"], v["suite"], v["machine"], v["mesh_shape"], v["inputs"], v["kwargs"],
                             v["timeout"], v["config_hash"], v["sources"],
                             traced_machine=v["traced_machine"])  # fmt: skip
        assert encoded.payload == payload(remade) and encoded.id == remade["id"]
        assert (encoded.op, encoded.machine, encoded.config_hash) == (v["op"], v["machine"], v["config_hash"])
    from sweeps.profiles import route

    for op, entry in store.entries():
        info = entry["executions"][0].get("machine_info")
        profile = route(info)
        canonical = canonical_arguments(entry["arguments"])
        mesh = (info or {}).get("mesh_device_shape") or (list(profile.mesh_shape) if profile else [1, 1])
        machine = profile.name if profile else "unknown"
        expected = make_vector(
            op, "model_traced", machine, mesh, canonical["args"], canonical["kwargs"], timeout_for(op, profile)
        )
        assert expected["id"] in ids, f"{op} {entry['config_hash'][:12]} was dropped"
        vector = next(v for v in vectors if v["id"] == expected["id"])
        assert vector["inputs"] == expected["inputs"] and vector["kwargs"] == expected["kwargs"]  # exactly as traced
        assert vector["traced_machine"] == hardware_summary(info)  # the hardware it was traced on
        reason = expansion.not_run.get(vector["id"])
        routed = Routing(profile, "x", tuple(mesh))
        assert reason == not_run_reason(op, routed, untraced(op, canonical)) or profile is None


def test_configs_without_a_machine_or_a_definition_are_not_run_with_a_reason(tmp_path):
    sample = json.loads(SAMPLE.read_text())
    undefined = {"operations": {"ttnn.sweepctl_undefined_op": sample["operations"]["ttnn.silu"]}}
    expansion = model_traced(
        build(_store(MINI, SAMPLE, write_json(tmp_path / "undefined.json", undefined))), Selection()
    )
    reasons = sorted(set(expansion.not_run.values()))
    assert any(r.startswith("traced on unknown: no machine profile") for r in reasons)
    assert "no sweep definition for ttnn.sweepctl_undefined_op" in reasons
    assert not any(r.startswith("no sweep definition for ttnn.experimental") for r in reasons)  # the sample's ops
    forced = model_traced(build(_store(MINI)), Selection(machine="n300"))
    assert {v.machine for v in forced.vectors} == {"n300"}
    # the fixture traced only the tensor of slice and transpose: named at expansion, never a TypeError later
    assert sorted(forced.not_run.values()) == [
        "argument 1 (dim0) was not traced",
        "argument 1 (slice_start) was not traced",
    ]
    cases = all_cases(build(_store(MINI)), Selection(suite="all_cases", machine="n300"))  # joined from pieces
    assert sorted(cases.not_run.values()) == sorted(forced.not_run.values())
    for encoded, v in zip(forced.vectors, forced.decoded(), strict=True):  # joined under --machine == the walk
        assert v["mesh_shape"] == [1, 2] and v["timeout"] == timeout_for(v["op"], get_profile("n300"))
        remade = make_vector(v["op"], v["suite"], "n300", [1, 2], v["inputs"], v["kwargs"], v["timeout"],
                             v["config_hash"], v["sources"], traced_machine=v["traced_machine"])  # fmt: skip
        assert encoded.payload == payload(remade) and encoded.id == remade["id"]


def test_old_dialect_values_run_and_a_value_never_traced_is_not_run_naming_its_argument(tmp_path):
    doc = json.loads((ROOT / "tests" / "data" / "ttnn_old_master_fragments.json").read_text())
    paths = [write_json(tmp_path / f"{key}.json", doc[key]) for key in ("pad_3d981a52", "pad_042d405e")]
    expansion = model_traced(build(_store(*paths)), Selection(machine="n150"))
    by_padding = {json.dumps(v["inputs"][1]): expansion.not_run.get(v["id"]) for v in expansion.decoded()}
    assert by_padding["[[0, 0], [0, 13], [0, 0], [0, 0]]"] is None  # text that carried the pairs: runs
    assert by_padding["[32, 16, 3, 3]"] is None
    unsupported = [reason for key, reason in by_padding.items() if "unsupported type" in key]
    assert unsupported == ["argument 1 could not be read from the trace"] * 2


def test_identical_inputs_collapse_to_one_vector_with_every_source(add_sweep, tmp_path):
    op = "ttnn.add"
    config = add_sweep["operations"][op]["configurations"][0]
    twin = copy.deepcopy(config)
    twin["config_hash"] = "f" * 64  # another trace spelling of the same call
    twin["executions"][0]["source"] = "models/other/model.py"
    twin["executions"][0]["trace_uid"] = "other"
    data = {"operations": {op: {"configurations": [config, twin]}}}
    path = tmp_path / "twins.json"
    path.write_text(json.dumps(data))
    expansion = model_traced(build(_store(path)), Selection())
    assert len(expansion.vectors) == 1
    vector = expansion.decoded()[0]
    assert vector["sources"] == sorted({config["executions"][0]["source"], "models/other/model.py"})
    assert vector["config_hash"] == min(config["config_hash"], "f" * 64)


def test_all_cases_is_the_product_of_observed_values_and_respects_its_cap():
    store = _store(ADD_SWEEP)
    index = build(store)
    selection = Selection(ops=["ttnn.add"], suite="all_cases", cap=10**9)
    counts = count_all_cases(index, selection)
    expansion = all_cases(index, selection)
    assert sum(counts.values()) >= len(expansion.vectors) > len(list(store.entries("ttnn.add")))
    assert len({v.id for v in expansion.vectors}) == len({v["id"] for v in expansion.decoded()})
    assert len({v.id for v in expansion.vectors}) == len(expansion.vectors)
    for encoded, v in zip(expansion.vectors, expansion.decoded(), strict=True):  # joined bytes == the walk's
        remade = make_vector(v["op"], "all_cases", v["machine"], v["mesh_shape"], v["inputs"], v["kwargs"],
                             v["timeout"], None, v["sources"])  # fmt: skip
        assert encoded.payload == payload(remade) and encoded.id == remade["id"]
        flat = encoded.tensors
        assert [(flat[n], expansion.tensors.keys[flat[n + 1]]) for n in range(0, len(flat), 2)] == tensor_keys(remade)
        canonical = {"args": v["inputs"], "kwargs": v["kwargs"]}
        routed = Routing(get_profile(v["machine"]), "x", tuple(v["mesh_shape"]))
        assert expansion.not_run.get(encoded.id) == not_run_reason("ttnn.add", routed, untraced("ttnn.add", canonical))
    traced = {v.id for v in model_traced(index, Selection(ops=["ttnn.add"])).vectors}
    assert traced <= {v.id for v in expansion.vectors}  # the traced configs are points of the product
    with pytest.raises(InputError, match="exceed the cap of 10"):
        all_cases(index, Selection(ops=["ttnn.add"], suite="all_cases", cap=10))


def test_nightly_grids_expand_for_their_machines():
    expansion = expand({}, Selection(suite="nightly", ops=["ttnn.matmul"]))
    assert {v.machine for v in expansion.vectors} == set(GRIDS["ttnn.matmul"][1])
    assert all(v["suite"] == "nightly" for v in expansion.decoded()) and expansion.not_run == {}


def test_unknown_suite_is_one_clear_error():
    with pytest.raises(InputError, match="unknown suite 'weekly'"):
        expand({}, Selection(suite="weekly"))


def _configs_of(index) -> dict:
    return {op: index.configs(op) for op in index.ops()}


def test_the_store_index_path_equals_the_checking_walk_on_real_stores(tmp_path, monkeypatch):
    from sweeps import index

    monkeypatch.setenv("SWEEPCTL_CACHE_DIR", str(tmp_path / "cache"))
    store = _store(ADD_SWEEP, MINI, TRACER_EXAMPLES, SAMPLE)
    path = tmp_path / "store.json"
    store.save(str(path))
    built = _configs_of(index.load(str(path)))
    assert list((tmp_path / "cache" / "index").iterdir())  # saved for the next run...
    assert _configs_of(index.load(str(path))) == built  # ...and read back the same
    traced = [(op, config) for op, configs in built.items() for config in configs]
    assert len(traced) == len(store)
    for op, config in traced:
        entry = store.config(op, config.config_hash)
        canonical = canonical_arguments(entry["arguments"])
        assert config.canonical == canonical
        assert config.untraced == untraced(op, canonical)
        args = (op, "model_traced", "n300", [1, 2], canonical["args"], canonical["kwargs"], 30.0)
        fast = make_vector(op, "model_traced", "n300", [1, 2], *config.canonical.values(), 30.0, presorted=True)
        assert payload(fast) == payload(make_vector(*args))  # the same bytes, so the same id


def test_the_store_index_follows_the_store_and_survives_a_bad_cache(tmp_path, monkeypatch):
    from sweeps import index

    monkeypatch.setenv("SWEEPCTL_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "store.json"
    _store(ADD_SWEEP).save(str(path))
    before = _configs_of(index.load(str(path)))
    bigger = _store(ADD_SWEEP, MINI)
    bigger.save(str(path))  # an import rewrites the store: the index must not be the old one
    after = _configs_of(index.load(str(path)))
    assert sum(map(len, after.values())) == len(bigger) > sum(map(len, before.values()))
    (cached,) = (tmp_path / "cache" / "index").iterdir()
    cached.write_bytes(b"\xc1 not msgpack")
    assert _configs_of(index.load(str(path))) == after  # a corrupt cache is rebuilt, never trusted
    with pytest.raises(InputError, match="no such file"):
        index.load(str(tmp_path / "missing.json"))
