"""Vectors: canonical msgpack, ids stable across processes and Python versions, clear decode errors."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweeps.vector import VECTOR_SCHEMA, VectorError, decode, encode, make_vector, vector_id
from tests.conftest import ROOT

TENSOR = {
    "tensor": {
        "shape": [1, 1, 32, 64],
        "dtype": "BFLOAT8_B",
        "layout": "TILE",
        "memory_config": {
            "memory_layout": "HEIGHT_SHARDED",
            "buffer_type": "L1",
            "shard_spec": {"grid": [{"start": [0, 0], "end": [0, 0]}], "shape": [32, 64], "orientation": "ROW_MAJOR"},
        },
        "placement": None,
        "storage": "DEVICE",
    }
}


def _vector(suite="model_traced", **kw):
    return make_vector(
        "ttnn.add",
        suite,
        "n300",
        [1, 2],
        [TENSOR, float("inf")],
        {"alpha": float("nan"), **kw},
        30,
        config_hash="abc",
        sources=["b.py", "a.py", "a.py"],
    )


def test_round_trip_and_special_floats():
    vector = _vector()
    assert decode(encode(vector)) == vector
    assert vector["inputs"][1] == "inf" and vector["kwargs"]["alpha"] == "nan"
    assert vector["sources"] == ["a.py", "b.py"]


def test_same_config_in_two_suites_keeps_one_id():
    assert _vector("model_traced")["id"] == _vector("nightly")["id"]
    assert _vector(beta=1)["id"] != _vector()["id"]


def test_key_order_and_tuples_do_not_change_the_id():
    a = {"op": "ttnn.pad", "machine": "n150", "mesh_shape": (1, 1), "inputs": [], "kwargs": {"b": 1, "a": (2, 3)}}
    b = {"kwargs": {"a": [2, 3], "b": 1}, "inputs": [], "mesh_shape": [1, 1], "machine": "n150", "op": "ttnn.pad"}
    assert vector_id(a) == vector_id(b)


_CHILD = (
    "import json,sys; from sweeps.vector import make_vector; v=json.loads(sys.argv[1]); "
    "print(make_vector(v['op'], 's', 'n300', [1, 2], v['inputs'], v['kwargs'], 30)['id'])"
)


def _interpreters(tmp_path):
    """This venv's Python plus the machine's other CPython versions, each given msgpack and orjson in a
    private --target directory (nothing installed into those interpreters)."""
    found = [(sys.executable, "")]
    for pattern in ("3.10*", "3.11*"):
        for python in sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{pattern}/bin/python3")))[:1]:
            target = tmp_path / os.path.basename(os.path.dirname(os.path.dirname(python)))
            subprocess.run(
                [python, "-m", "pip", "install", "-q", "--target", str(target), "msgpack", "orjson"],
                check=True,
                capture_output=True,
            )
            found.append((python, str(target)))
    return found


def test_id_is_equal_in_other_processes_and_python_versions(tmp_path):
    spec = {"op": "ttnn.add", "inputs": [TENSOR, 1.5], "kwargs": {"memory_config": None, "k": [1, 2]}}
    here = make_vector(spec["op"], "s", "n300", [1, 2], spec["inputs"], spec["kwargs"], 30)["id"]
    for python, extra in _interpreters(tmp_path):
        path = os.pathsep.join(p for p in (str(ROOT), extra) if p)
        out = subprocess.run(
            [python, "-c", _CHILD, json.dumps(spec)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": path, "PYTHONHASHSEED": "123"},
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == here, python


def test_decode_errors_are_clear():
    with pytest.raises(VectorError, match="malformed vector payload"):
        decode(b"\xc1\xff garbage")
    with pytest.raises(VectorError, match="not a map"):
        decode(msgpack.packb([1, 2]))
    newer = {**_vector(), "schema": VECTOR_SCHEMA + 1}
    with pytest.raises(VectorError, match=f"schema {VECTOR_SCHEMA + 1} is newer"):
        decode(msgpack.packb(newer))
    incomplete = {k: v for k, v in _vector().items() if k != "inputs"}
    with pytest.raises(VectorError, match="missing inputs"):
        decode(msgpack.packb(incomplete))
    with pytest.raises(VectorError, match="not a string"):
        encode({1: "x"})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoding_random_bytes_never_tracebacks(payload):
    try:
        decode(payload)
    except VectorError:
        pass
