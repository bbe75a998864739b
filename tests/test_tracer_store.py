"""The master store: merge by hash, counts across trace runs, atomic writes, round trips."""

from __future__ import annotations

import gc
import json
import os
import weakref

from broker.cli import main
from tests.conftest import ADD_SWEEP, MINI, TRACER_EXAMPLES, deepcopy, write_json
from tests.synth import synthetic_store
from tracer.args import canonical_arguments
from tracer.store import MasterStore, bulk, read_inputs


def _canonical_set(store: MasterStore) -> dict:
    return {h: (op, canonical_arguments(e["arguments"])) for op, e in store.entries() for h in [e["config_hash"]]}


def test_read_write_read_gives_equal_canonical_configs(tmp_path):
    store = MasterStore()
    store.merge(read_inputs([str(ADD_SWEEP), str(MINI), str(TRACER_EXAMPLES)]))
    path = tmp_path / "store.json"
    store.save(str(path))
    again = MasterStore.load(str(path))
    assert _canonical_set(again) == _canonical_set(store)
    assert len(again) == len(store) == 22
    # what we wrote is tt-metal's current dialect: the mini fixture's graph-tracer tensors were rewritten,
    # so its made-up hashes (of the old spelling) gave way to current ones
    assert again.verify() == []
    assert again.hash_versions()["versions"] == {"current": 4, "legacy": 18}


def test_reimport_is_idempotent_and_distinct_trace_runs_add_up(tmp_path, add_sweep):
    store = MasterStore()
    first = store.merge(read_inputs([str(ADD_SWEEP)]))
    assert first.as_dict()["new_configs"] == 18
    again = store.merge(read_inputs([str(ADD_SWEEP)]))
    assert again.as_dict() == {**again.as_dict(), "new_configs": 0, "known_configs": 18}
    calls = sum(r["count"] for _, e in store.entries() for r in e["executions"])
    # a second trace run of the same model: same configs, its own trace_uid -> counts add up
    second_run = deepcopy(add_sweep)
    for body in second_run["operations"].values():
        for config in body["configurations"]:
            for run in config["executions"]:
                run["trace_uid"] = "second-run"
    store.merge(read_inputs([str(write_json(tmp_path / "run2.json", second_run))]))
    assert len(store) == 18
    assert sum(r["count"] for _, e in store.entries() for r in e["executions"]) == 2 * calls


def test_failed_import_leaves_the_store_untouched(tmp_path, capsys):
    store_path = tmp_path / "store.json"
    assert main(["store", "import", str(ADD_SWEEP), "--into", str(store_path)]) == 0
    before = store_path.read_bytes()
    bad = tmp_path / "bad.json"
    bad.write_text('{"operations": {"ttnn.add": {"configurations": [ }}', encoding="utf-8")
    capsys.readouterr()
    assert main(["store", "import", str(MINI), str(bad), "--into", str(store_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{bad}:1:" in err and "malformed JSON" in err
    assert store_path.read_bytes() == before
    assert [p for p in os.listdir(tmp_path) if p.startswith(".store-")] == []  # no temp file left behind


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    newer = write_json(tmp_path / "newer.json", {"operations": {}, "metadata": {"sweepctl_schema": 7}})
    unknown = write_json(tmp_path / "unknown.json", {"rows": []})
    cases = [
        (["store", "import", str(tmp_path / "missing.json")], "no such file"),
        (["store", "import", str(unknown)], "unknown dialect"),
        (["store", "import", str(newer)], "newer than this sweepctl"),
        (["store", "stats", str(tmp_path / "missing.json")], "no such file"),
        (["configs", "pad", "--store", str(newer)], "newer than this sweepctl"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("sweepctl: error:") and message in err and "\n" not in err, err
    assert not (tmp_path / "ttnn_operations_master.json").exists()


def test_stats_and_configs_commands(tmp_path, capsys):
    store_path = tmp_path / "store.json"
    main(["store", "import", str(ADD_SWEEP), str(MINI), "--into", str(store_path)])
    capsys.readouterr()
    assert main(["store", "stats", str(store_path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["ops"] == 8 and stats["configs"] == 20 and stats["unparsed_args"] == 2
    assert "meta-llama/Llama-3.1-8B" in stats["models"]
    assert stats["machines"]["tt-galaxy-wh x32 mesh 4x8"] == 17
    assert main(["configs", "ttnn::add", "--store", str(store_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ttnn.add: 11 configs")
    assert "L1 WIDTH_SHARDED grid [(0,0)-(7,2), (0,3)-(3,3)] (28 cores) shard [32, 32] ROW_MAJOR" in out
    assert main(["configs", "ttnn.nope", "--store", str(store_path)]) == 2


def test_synthetic_store_merges_a_rerun_into_the_known_configs(tmp_path):
    """Correctness on a store of 10k configs; the 100k scale (time, memory per config) is the
    benchmark's (tests/benchmarks/test_bench_store_import.py)."""
    n, rerun_n = 10_000, 1_000
    path = write_json(tmp_path / "big.json", synthetic_store(n))
    dup = write_json(tmp_path / "dup.json", synthetic_store(rerun_n, trace_uid="rerun"))
    store = MasterStore()
    summary = store.merge(read_inputs([str(path), str(dup)]))
    assert len(store) == n
    assert summary.as_dict()["new_configs"] == n and summary.as_dict()["known_configs"] == rerun_n
    rerun = [e for _, e in store.entries() if len(e["executions"]) == 2]
    assert len(rerun) == rerun_n
    out = tmp_path / "out.json"
    store.save(str(out))
    assert len(MasterStore.load(str(out))) == n


def test_bulk_freezes_nothing_so_a_cycle_built_inside_is_still_collected():
    """bulk() keeps the cyclic GC off while a store is built, and used to freeze the caller's whole heap
    on the way out (a cycle alive then was never collected, in any process that imported a store)."""

    class Node:
        pass

    with bulk():
        node = Node()
        node.itself = node
        alive = weakref.ref(node)
    assert gc.isenabled()
    del node
    gc.collect()
    assert alive() is None
