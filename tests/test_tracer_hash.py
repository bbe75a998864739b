"""config_hash keeps tt-metal's meaning in both its versions: every stored hash in the real masters
reproduces, and the current version matches an independent reading of tt-metal's rules."""

from __future__ import annotations

import pytest

from tests import ttmetal
from tests.conftest import ADD_SWEEP, DEEPSEEK, GALAXY_TRACE, deepcopy
from tracer.confighash import (
    CURRENT,
    LEGACY,
    config_hash,
    hash_version,
    legacy_config_hash,
    normalize_for_hash,
)
from tracer.master import load_json, read_master
from tracer.store import MasterStore, read_inputs


def test_every_stored_hash_in_the_add_sweep_master_is_the_legacy_version(add_sweep):
    entries = list(read_master(add_sweep, str(ADD_SWEEP)))
    assert len(entries) == sum(len(v["configurations"]) for v in add_sweep["operations"].values())
    for entry in entries:
        info = entry.executions[0].get("machine_info")
        assert legacy_config_hash(entry.op, entry.arguments, info) == entry.stored_hash, entry.op
        # the memory configs carry a device-specific `hash`: the current version differs
        assert config_hash(entry.op, entry.arguments, info) != entry.stored_hash


def test_all_338_deepseek_hashes_reproduce_four_pads_only_with_minus_inf_as_a_float():
    entries = list(read_master(load_json(str(DEEPSEEK)), "deepseek"))
    assert len(entries) == 338
    as_floats = []
    for entry in entries:
        info = entry.executions[0]["machine_info"]
        assert hash_version(entry.stored_hash, entry.op, entry.arguments, info) == LEGACY, entry.op
        if legacy_config_hash(entry.op, entry.arguments, info) != entry.stored_hash:
            as_floats.append(entry)
    assert [e.op for e in as_floats] == ["ttnn.pad"] * 4
    assert all(e.arguments["value"] == "-inf" for e in as_floats)


def test_the_current_version_is_tt_metals_normalised_hash():
    """Independent check: tests/ttmetal.py deep-copies and normalises in place, as tt-metal does."""
    entries = list(read_master(load_json(str(DEEPSEEK)), "deepseek"))
    for entry in entries:
        info = entry.executions[0]["machine_info"]
        assert config_hash(entry.op, entry.arguments, info) == ttmetal.config_hash(entry.op, entry.arguments, info)
        assert legacy_config_hash(entry.op, entry.arguments, info) == ttmetal.config_hash(
            entry.op, entry.arguments, info, normalize=False
        )


def test_normalisation_rules_and_copy_on_write():
    mc = {"memory_layout": "TensorMemoryLayout.INTERLEAVED", "shard_spec": None, "hash": 4608, "is_sharded": False}
    args = {
        "arg0": {"memory_config": mc},
        "sem": [{"type": "global_semaphore", "value": "<ttnn.global_semaphore object at 0x7f63fff336f0>"}],
        "flag": {"hash": True},  # tt-metal's isinstance(.., int) drops bools too
        "name": {"hash": "keep-me"},  # a string hash is no device pointer
    }
    before = deepcopy(args)
    normalized = normalize_for_hash(args)
    assert args == before  # the input is never changed
    assert normalized["arg0"]["memory_config"] == {
        "memory_layout": "TensorMemoryLayout.INTERLEAVED",
        "shard_spec": "None",
        "is_sharded": False,
    }
    assert normalized["sem"][0]["value"] == "<ttnn.global_semaphore object>"
    assert normalized["flag"] == {} and normalized["name"] == {"hash": "keep-me"}
    plain = {"arg0": {"shape": [1, 32]}, "arg1": 1.0}
    assert normalize_for_hash(plain) is plain  # nothing to normalise: no copy


def test_versions_are_counted_and_only_what_neither_reproduces_is_stale(add_sweep):
    store = MasterStore()
    store.merge(read_inputs([str(ADD_SWEEP), str(GALAXY_TRACE)]))
    report = store.hash_versions()
    assert report["configs"] == 18 + 4
    assert report["versions"] == {CURRENT: 4, LEGACY: 18}  # the trace is hashed as tt-metal hashes it today
    assert report["stale"] == []
    tampered = deepcopy(add_sweep)
    tampered["operations"]["ttnn.add"]["configurations"][0]["arguments"]["arg1"] = 2.0
    store = MasterStore()
    store.merge(read_master(tampered, "x"))
    stale = store.verify()
    assert [(row["op"], row["config_id"]) for row in stale] == [("ttnn.add", 1)]
    config = tampered["operations"]["ttnn.add"]["configurations"][0]
    machine = config["executions"][0]["machine_info"]
    assert stale[0]["recomputed"] == config_hash("ttnn.add", config["arguments"], machine)


def test_hash_depends_on_hardware_and_arguments():
    args = {"arg0": 1}
    n300 = {"board_type": "Wormhole", "device_series": "n300", "card_count": 1}
    t3k = {**n300, "card_count": 4}
    assert config_hash("ttnn.add", args, n300) != config_hash("ttnn.add", args, t3k)
    assert config_hash("ttnn.add", args, n300) != config_hash("ttnn.add", {"arg0": 2}, n300)
    assert config_hash("ttnn.add", args, n300) == config_hash("ttnn.add", dict(args), dict(n300))


@pytest.mark.parametrize("stored", ["0" * 64, "abc123"])
def test_a_hash_neither_version_makes_is_stale(stored):
    assert hash_version(stored, "ttnn.add", {"arg0": 1}, None) is None


def test_load_json_of_real_file_is_plain_dict():
    assert "operations" in load_json(str(ADD_SWEEP))
