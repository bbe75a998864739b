"""config_hash keeps tt-metal's meaning: every stored hash in the real master reproduces."""

from __future__ import annotations

from tests.conftest import ADD_SWEEP
from tracer.confighash import config_hash
from tracer.master import load_json, read_master
from tracer.store import MasterStore


def test_every_stored_hash_in_the_real_master_reproduces(add_sweep):
    entries = list(read_master(add_sweep, str(ADD_SWEEP)))
    assert len(entries) == sum(len(v["configurations"]) for v in add_sweep["operations"].values())
    for entry in entries:
        info = entry.executions[0].get("machine_info")
        assert config_hash(entry.op, entry.arguments, info) == entry.stored_hash, entry.op


def test_verify_passes_the_real_master_and_flags_a_tampered_one(add_sweep):
    store = MasterStore()
    store.merge(read_master(add_sweep, "x"))
    assert store.verify() == []
    tampered = add_sweep
    tampered["operations"]["ttnn.add"]["configurations"][0]["arguments"]["arg1"] = 2.0
    store = MasterStore()
    store.merge(read_master(tampered, "x"))
    stale = store.verify()
    assert [(row["op"], row["config_id"]) for row in stale] == [("ttnn.add", 1)]


def test_hash_depends_on_hardware_and_arguments():
    args = {"arg0": 1}
    n300 = {"board_type": "Wormhole", "device_series": "n300", "card_count": 1}
    t3k = {**n300, "card_count": 4}
    assert config_hash("ttnn.add", args, n300) != config_hash("ttnn.add", args, t3k)
    assert config_hash("ttnn.add", args, n300) != config_hash("ttnn.add", {"arg0": 2}, n300)
    assert config_hash("ttnn.add", args, n300) == config_hash("ttnn.add", dict(args), dict(n300))


def test_load_json_of_real_file_is_plain_dict():
    assert "operations" in load_json(str(ADD_SWEEP))
