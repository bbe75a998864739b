"""Every master-JSON dialect reads into the same canonical configs; nothing unknown is defaulted."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import ADD_SWEEP, DATA, DEEPSEEK, MINI, TRACER_EXAMPLES, deepcopy, write_json
from tracer.args import canonical_arguments, canonical_value, count_unparsed
from tracer.confighash import config_hash
from tracer.cppjson import parse_number_list, repair
from tracer.errors import InputError
from tracer.master import legacy_arguments, read_master
from tracer.store import MasterStore, read_inputs

UNSUPPORTED = "[ unsupported type , std::reference_wrapper<ttsl::SmallVector<std::array<unsigned int, 2ul>, 8ul> >]"
# A verbatim UnparsedElement from tt-metal's old master (ttnn::pad): C++ `{..} - {..}` core ranges.
PAD_UNPARSED = (
    '{"arg0": {"Tensor":{"storage":{},"tensor_spec":{"logical_shape":[1, 3, 224, 224],"tensor_layout":'
    '{"dtype":"DataType::BFLOAT16","page_config":{"config":{"tile":{"tile_shape":"{32, 32}","face_shape":'
    '"{16, 16}","num_faces":4}}},"memory_config":{"memory_layout":"TensorMemoryLayout::HEIGHT_SHARDED",'
    '"buffer_type":"BufferType::L1","shard_spec":{"grid":[{"x":0,"y":0} - {"x":7,"y":7}],"shape":"{224, 224}",'
    '"orientation":"ShardOrientation::ROW_MAJOR"},"nd_shard_spec":{"shard_shape":[224, 224],"grid":'
    '[{"x":0,"y":0} - {"x":7,"y":7}],"orientation":"ShardOrientation::ROW_MAJOR","shard_distribution_strategy":'
    '"ShardDistributionStrategy::ROUND_ROBIN_1D"},"created_with_nd_shard_spec":0},"alignment":[1]}}}}}'
)


def _tensor_core(value):
    """The parts of a canonical tensor every dialect records (placement is per-tensor only lately)."""
    t = value["tensor"]
    return {k: t[k] for k in ("shape", "dtype", "layout", "memory_config")}


def _legacy_memory_config(mc: dict) -> dict:
    spec = mc["shard_spec"]
    legacy_spec = "std::nullopt"
    if isinstance(spec, dict):
        legacy_spec = {
            "grid": [{"start": r["start"], "end": r["end"]} for r in spec["grid"]],
            "shape": "{{{}, {}}}".format(*spec["shape"]),
            "orientation": "ShardOrientation::" + spec["orientation"],
        }
    return {
        "memory_layout": mc["memory_layout"].replace(".", "::"),
        "buffer_type": mc["buffer_type"].replace(".", "::"),
        "shard_spec": legacy_spec,
        "nd_shard_spec": "std::nullopt",
    }


def _legacy_value(value):
    if isinstance(value, dict) and value.get("type") == "ttnn.Tensor":
        page = {"tile": {"tile_shape": "{32, 32}"}} if value["layout"] == "Layout.TILE" else {"row_major": {}}
        return {
            "Tensor": {
                "storage": {},
                "tensor_spec": {
                    "logical_shape": value["original_shape"],
                    "tensor_layout": {
                        "dtype": value["original_dtype"].replace(".", "::"),
                        "page_config": {"config": page},
                        "memory_config": _legacy_memory_config(value["memory_config"]),
                    },
                },
            }
        }
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _only_tensor_and_scalar_configs(add_sweep):
    """The ttnn.add configs: tensors and scalars only, which every dialect can express."""
    return add_sweep["operations"]["ttnn.add"]["configurations"]


def test_dialects_2_and_3_read_like_the_current_one(add_sweep, tmp_path):
    configs = _only_tensor_and_scalar_configs(add_sweep)
    d2 = [
        {
            "arguments": c["arguments"],
            "source": c["executions"][0]["source"],
            "machine_info": c["executions"][0]["machine_info"],
        }
        for c in configs
    ]
    d3 = [
        {
            "arguments": c["arguments"],
            "contexts": [
                {"source": [c["executions"][0]["source"]], "machine_info": [c["executions"][0]["machine_info"]]}
            ],
        }
        for c in configs
    ]
    current = list(read_master(add_sweep, "cur"))
    current = [e for e in current if e.op == "ttnn.add"]
    for dialect in (d2, d3):
        entries = list(read_master({"operations": {"ttnn::add": {"configurations": dialect}}}, "old"))
        assert [e.op for e in entries] == ["ttnn.add"] * len(configs)
        assert [canonical_arguments(e.arguments) for e in entries] == [
            canonical_arguments(e.arguments) for e in current
        ]
        # no stored hash in these dialects: the current version, from the same hardware
        store = MasterStore()
        store.merge(entries)
        assert [e["config_hash"] for _, e in store.entries("ttnn.add")] == [
            config_hash("ttnn.add", c["arguments"], c["executions"][0]["machine_info"]) for c in configs
        ]
        assert store.hash_versions()["stale"] == []


def test_dialect_1_with_cpp_spellings_and_unparsed_elements(add_sweep):
    configs = _only_tensor_and_scalar_configs(add_sweep)
    legacy = []
    for c in configs:
        items = [{k: _legacy_value(v)} for k, v in c["arguments"].items() if k.startswith("arg")]
        # hide the first argument in an UnparsedElement written the way the C++ dump writes ranges
        text = re.sub(
            r'\{"start": (\{[^{}]*\}), "end": (\{[^{}]*\})\}', r"\1 - \2", json.dumps({"arg0": items[0]["arg0"]})
        )
        assert " - " in text or "nullopt" in text
        items[0] = {"UnparsedElement": {"error": "Expecting ',' delimiter", "element_info": text}}
        legacy.append(items)
    entries = list(read_master({"operations": {"ttnn::add": {"configurations": legacy}}}, "legacy"))
    for entry, config in zip(entries, configs, strict=True):
        got = canonical_arguments(entry.arguments)
        want = canonical_arguments({k: v for k, v in config["arguments"].items() if k.startswith("arg")})
        assert count_unparsed(got) == 0
        for g, w in zip(got["args"], want["args"], strict=True):
            if isinstance(w, dict):
                assert _tensor_core(g) == _tensor_core(w)
            else:
                assert g == w


def test_real_unparsed_element_is_repaired():
    entries = list(
        read_master(
            {
                "operations": {
                    "ttnn::pad": {
                        "configurations": [
                            [
                                {
                                    "UnparsedElement": {
                                        "error": "Expecting ',' delimiter: line 1 column 363",
                                        "element_info": PAD_UNPARSED,
                                    }
                                },
                                {"arg1": UNSUPPORTED},
                                {"arg2": "0"},
                                {"arg4": "nullopt"},
                            ]
                        ]
                    }
                }
            },
            "old-master",
        )
    )
    canonical = canonical_arguments(entries[0].arguments)
    tensor = canonical["args"][0]["tensor"]
    assert tensor["shape"] == [1, 3, 224, 224]
    assert tensor["dtype"] == "BFLOAT16" and tensor["layout"] == "TILE"
    assert tensor["memory_config"] == {
        "memory_layout": "HEIGHT_SHARDED",
        "buffer_type": "L1",
        "shard_spec": {"grid": [{"start": [0, 0], "end": [7, 7]}], "shape": [224, 224], "orientation": "ROW_MAJOR"},
    }
    assert canonical["args"][1]["reason"] == "traced as an unsupported type"  # kept, flagged, not dropped
    assert canonical["args"][2] == 0 and canonical["args"][3] is None
    assert count_unparsed(canonical) == 1


def test_unrepairable_fragment_is_kept_verbatim_and_flagged():
    blob = {"error": "x", "element_info": '{"arg0": {"Tensor": {broken'}
    entries = list(read_master({"operations": {"pad": {"configurations": [[{"UnparsedElement": blob}]]}}}, "f"))
    assert entries[0].op == "ttnn.pad"
    canonical = canonical_arguments(entries[0].arguments)
    assert canonical["args"][0]["unparsed"] == {"UnparsedElement": blob}
    assert repair('{"a": {32, 32}, "b": nullopt}') == {"a": [32, 32], "b": None}


def test_unknown_dtype_is_flagged_never_defaulted(add_sweep):
    config = deepcopy(add_sweep["operations"]["ttnn.add"]["configurations"][0])
    config["arguments"]["arg0"]["original_dtype"] = "DataType.BFLOAT3_Z"
    entry = next(read_master({"operations": {"ttnn.add": {"configurations": [config]}}}, "f"))
    dtype = canonical_arguments(entry.arguments)["args"][0]["tensor"]["dtype"]
    assert dtype == {"unparsed": "DataType.BFLOAT3_Z", "reason": "unknown DataType"}


def test_machine_info_is_normalised(add_sweep):
    config = deepcopy(add_sweep["operations"]["ttnn.add"]["configurations"][0])
    info = config["executions"][0]["machine_info"]
    info["device_series"] = "tt_galaxy_wh"
    info["mesh_device_shape"] = "[4, 8]"
    entry = next(read_master({"operations": {"ttnn.add": {"configurations": [config]}}}, "f"))
    got = entry.executions[0]["machine_info"]
    assert got["device_series"] == "tt-galaxy-wh" and got["mesh_device_shape"] == [4, 8]


def test_mini_fixture_reads_with_its_nested_tensor_spec():
    entries = read_inputs([str(MINI)])
    by_op = {e.op: e for e in entries}
    assert set(by_op) == {"ttnn.slice", "ttnn.transpose"}
    tensor = canonical_arguments(by_op["ttnn.slice"].arguments)["args"][0]["tensor"]
    assert tensor["shape"] == [1, 1, 224, 224]
    assert tensor["memory_config"]["shard_spec"]["grid"] == [{"start": [0, 0], "end": [7, 0]}]
    assert by_op["ttnn.slice"].executions[0]["trace_uid"] == "t1"
    assert by_op["ttnn.slice"].executions[0]["count"] == 4
    # no page_config in the fixture: layout is unknown, and says so
    assert tensor["layout"]["reason"] == "unknown Layout"


def test_operation_tracer_directory_keeps_ops_and_drops_infrastructure():
    entries = read_inputs([str(TRACER_EXAMPLES)])
    by_op = {e.op: e for e in entries}
    assert set(by_op) == {"ttnn.rand", "ttnn.add"}  # from_torch and to_device are infrastructure
    assert by_op["ttnn.rand"].executions[0]["count"] == 2  # two identical rand calls, one config
    add = canonical_arguments(by_op["ttnn.add"].arguments)
    assert [a["tensor"]["shape"] for a in add["args"]] == [[4, 5], [4, 5]]
    assert add["args"][0]["tensor"]["dtype"] == "BFLOAT16"
    # tt-metal keeps what was traced: the values and the host dtype they were serialised in
    assert by_op["ttnn.add"].arguments["arg0"]["dtype"] == "float32"
    assert by_op["ttnn.add"].arguments["arg0"]["values"][0][:2] == [0.90625, 0.953125]
    # no _trace_metadata.json: tt-metal's defaults, the directory's name and this host's machine (none here)
    assert by_op["ttnn.add"].executions[0]["source"] == "operation_tracer_examples"
    assert "machine_info" not in by_op["ttnn.add"].executions[0]


@pytest.mark.parametrize(
    "payload, message",
    [
        ([1, 2], "unknown dialect"),
        ({"operations": []}, "expected an object keyed by op name"),
        ({"operations": {"ttnn.add": {"configurations": [42]}}}, "configurations[0]: unknown dialect"),
        ({"operations": {}, "metadata": {"sweepctl_schema": 99}}, "newer than this sweepctl"),
    ],
)
def test_bad_documents_name_the_position(tmp_path, payload, message):
    path = write_json(tmp_path / "bad.json", payload)
    with pytest.raises(InputError) as info:
        read_inputs([str(path)])
    assert message in str(info.value) and str(path) in str(info.value)


def test_real_master_parses_without_unparsed_args():
    entries = read_inputs([str(ADD_SWEEP)])
    assert sum(count_unparsed(canonical_arguments(e.arguments)) for e in entries) == 0


FRAGMENTS = DATA / "ttnn_old_master_fragments.json"  # real old-dialect configs (PROVENANCE.md)


def test_old_dialect_text_that_carries_a_value_becomes_the_value():
    doc = json.loads(FRAGMENTS.read_text())
    pairs, shapes = [canonical_arguments(e.arguments) for e in read_master(doc["pad_3d981a52"], "f")]
    assert pairs["args"][1:] == [[[0, 0], [0, 13], [0, 0], [0, 0]], 0, 1, None]  # padding pairs, value, multicore
    assert shapes["args"][1:] == [[32, 16, 3, 3], [0, 0, 0, 0], 0]  # output shape, input start, value
    assert count_unparsed(pairs) == count_unparsed(shapes) == 0
    moved = canonical_arguments(legacy_arguments(doc["shape_and_memory_config_arguments_3d981a52"], "f"))
    interleaved_l1 = {"memory_layout": "INTERLEAVED", "buffer_type": "L1", "shard_spec": None}
    assert moved["args"][1:] == [[0, 0, 195, 479], {"memory_config": interleaved_l1}, 1]  # {"Shape"}, {"MemoryConfig"}
    binary = canonical_arguments(legacy_arguments(doc["binary_op_arguments_3d981a52"], "f"))
    for tensor in binary["args"][:2]:  # UnparsedElements whose grid is a C++ set of ranges {[..], [..]}
        spec = tensor["tensor"]["memory_config"]["shard_spec"]
        assert spec["grid"] == [{"start": [0, 0], "end": [7, 5]}, {"start": [0, 6], "end": [0, 6]}]
        assert spec["shape"] == [64, 96] and tensor["tensor"]["shape"] == [1, 1, 3136, 96]
    assert [count_unparsed(a) for a in binary["args"]] == [0, 0, 0, 0, 0, 1, 1, 1, 0]  # activations: no value


def test_what_was_traced_as_an_unsupported_type_stays_flagged():
    doc = json.loads(FRAGMENTS.read_text())
    pairs, shapes = [canonical_arguments(e.arguments) for e in read_master(doc["pad_042d405e"], "f")]
    assert pairs["args"][1]["reason"] == shapes["args"][1]["reason"] == "traced as an unsupported type"
    assert pairs["args"][2:] == [0, 1, None]


def test_value_texts_parse_to_numbers_and_nothing_else():
    assert parse_number_list("[[0, 0], [0, 13]]") == [[0, 0], [0, 13]]
    assert parse_number_list("{{0, 0}, {0, 32}}") == [[0, 0], [0, 32]]  # the C++ brace spelling
    assert parse_number_list("(2, 2)") == [2, 2] and parse_number_list("[1.5, -2]") == [1.5, -2]
    for text in ("[a]", "{x}", "[true]", "hello", "[1, 2", ""):
        assert parse_number_list(text) is None
    assert canonical_value("[1, 32]") == [1, 32] and canonical_value("ROW_MAJOR") == "ROW_MAJOR"
    assert canonical_value("-inf") == "-inf" == canonical_value(float("-inf"))  # the vector's spelling of -inf
    assert repair('{"grid": {[{"x":0,"y":0} - {"x":1,"y":1}], [{"x":0,"y":2} - {"x":0,"y":2}]}, "n": "{[}"}') == {
        "grid": [
            [{"start": {"x": 0, "y": 0}, "end": {"x": 1, "y": 1}}],
            [{"start": {"x": 0, "y": 2}, "end": {"x": 0, "y": 2}}],
        ],
        "n": "{[}",  # text in strings is left alone
    }


def test_typed_reprs_of_the_current_dialect_carry_their_values():
    entries = read_inputs([str(DEEPSEEK)])
    assert sum(count_unparsed(canonical_arguments(e.arguments)) for e in entries) == 0
    by_op = {}
    for entry in entries:
        by_op.setdefault(entry.op, []).append(canonical_arguments(entry.arguments))
    repeats = [c["kwargs"].get("repeat_dims", c["args"][-1]) for c in by_op["ttnn.repeat"]]
    assert [1, 8, 1, 1] in repeats and [1, 1, 32, 1] in repeats  # Shape([...])
    coords = [c["kwargs"]["mesh_coords"] for c in by_op["ttnn.experimental.paged_fill_cache"]]
    assert {"mesh_coordinates": [[2, 2]]} in coords  # {MeshCoordinate([2, 2])}
    assert len(by_op["ttnn.experimental.paged_update_cache"][0]["kwargs"]["mesh_coords"]["mesh_coordinates"]) == 32
    tiles = [c["kwargs"]["output_tile"] for c in by_op["ttnn.linear"] if "output_tile" in c["kwargs"]]
    assert tiles == [{"tile": [32, 32]}]
    configs = [c["kwargs"]["program_config"] for c in by_op["ttnn.rms_norm_pre_all_gather"]]
    assert {"object": "LayerNormDefaultProgramConfig", "fields": {"legacy_reduction": 0, "legacy_rsqrt": 0,
            "use_welford": 0}} in configs  # fmt: skip
    sharded = next(c for c in configs if c["object"] == "LayerNormShardedMultiCoreProgramConfig")
    assert sharded["fields"]["compute_with_storage_grid_size"] == {"x": 4, "y": 7} and sharded["fields"]["block_w"] == 1
