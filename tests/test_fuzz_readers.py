"""Fuzzing the store readers: any JSON document gives entries or one InputError, never a traceback."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.cli import main
from tracer.args import canonical_arguments, count_unparsed
from tracer.errors import InputError
from tracer.master import read_master
from tracer.optrace import call_arguments

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
keys = st.sampled_from(
    [
        "arg0",
        "arg1",
        "memory_config",
        "type",
        "Tensor",
        "shard_spec",
        "grid",
        "shape",
        "original_shape",
        "original_dtype",
        "layout",
        "executions",
        "arguments",
        "source",
        "machine_info",
        "contexts",
        "UnparsedElement",
        "element_info",
        "configurations",
        "operations",
        "metadata",
        "tensor_placement",
        "placement",
        "x",
        "y",
        "start",
        "end",
    ]
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys | st.text(max_size=8), inner, max_size=5),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_master_reader_never_raises_anything_but_input_error(doc):
    try:
        entries = list(read_master(doc, "fuzz.json"))
    except InputError as exc:
        assert "fuzz.json" in str(exc)
        return
    for entry in entries:
        count_unparsed(canonical_arguments(entry.arguments))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, documents, max_size=6))
def test_canonical_arguments_accept_anything(arguments):
    count_unparsed(canonical_arguments(arguments))


@settings(max_examples=200, deadline=None)
@given(documents, documents)
def test_operation_tracer_records_never_crash(args, kwargs):
    try:
        call_arguments({"operation_name": "ttnn.add", "args": args, "kwargs": kwargs}, "f.json", False)
    except InputError:
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents)
def test_import_of_any_json_file_is_all_or_nothing(tmp_path, doc):
    src = tmp_path / "in.json"
    src.write_text(json.dumps(doc), encoding="utf-8")
    store = tmp_path / "store.json"
    store.write_text('{"operations": {}}', encoding="utf-8")
    code = main(["store", "import", str(src), "--into", str(store)])
    assert code in (0, 2)
    if code == 2:
        assert store.read_text(encoding="utf-8") == '{"operations": {}}'
