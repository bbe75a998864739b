"""The vector: what a worker runs, as canonical msgpack with an id hashed from its content.

A vector is a map with string keys only: schema, op, suite, machine, mesh_shape, inputs
(canonical positional args), kwargs, config_hash and sources when traced, timeout. Encoding is
canonical (keys sorted, tuples as lists, NaN/Inf as the strings "nan"/"inf"/"-inf"), so the id is
the same in every process and Python version and never depends on a ttnn repr. The id covers the
op, machine, mesh shape, inputs and kwargs only: the same config in two suites keeps one id.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from typing import Any

import msgpack
import orjson

VECTOR_SCHEMA = 1
REQUIRED = ("schema", "op", "suite", "machine", "mesh_shape", "inputs", "kwargs", "timeout")
IDENTITY = ("op", "machine", "mesh_shape", "inputs", "kwargs")


class VectorError(ValueError):
    """A vector payload that cannot be run: malformed, incomplete, or from a newer schema."""


def canonical(value: Any, where: str = "vector") -> Any:
    """Plain msgpack-safe data: sorted string-keyed maps, lists, and special floats as strings."""
    if isinstance(value, dict):
        out = {}
        for key in sorted(value, key=lambda k: (not isinstance(k, str), str(k))):
            if not isinstance(key, str):
                raise VectorError(f"{where}: key {key!r} is not a string")
            out[key] = canonical(value[key], f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [canonical(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise VectorError(f"{where}: {type(value).__name__} is not vector data")


def _sorted_copy(value: Any) -> Any:
    """canonical() for data already free of tuples, non-string keys and non-finite floats (what
    tracer.args produces from JSON): orjson sorts the keys at C speed."""
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


def encode(vector: dict[str, Any]) -> bytes:
    return msgpack.packb(canonical(vector), use_bin_type=True)


def payload(vector: dict[str, Any]) -> bytes:
    """The wire bytes of a vector from make_vector, which is canonical already (no second walk)."""
    return msgpack.packb(vector, use_bin_type=True)


def vector_id(vector: dict[str, Any]) -> str:
    """sha256 of the canonical msgpack of the identity fields (any key order, tuples or lists)."""
    return _canonical_id(canonical({key: vector.get(key) for key in IDENTITY}))


def _canonical_id(vector: dict[str, Any]) -> str:
    """vector_id of a vector that is canonical already (make_vector's): no second walk."""
    identity = {key: vector.get(key) for key in sorted(IDENTITY)}
    return hashlib.sha256(msgpack.packb(identity, use_bin_type=True)).hexdigest()[:32]


def make_vector(
    op: str,
    suite: str,
    machine: str,
    mesh_shape: list[int],
    inputs: list[Any],
    kwargs: dict[str, Any],
    timeout: float,
    config_hash: str | None = None,
    sources: list[str] | None = None,
    trusted: bool = False,
) -> dict[str, Any]:
    """`trusted`: inputs and kwargs come from tracer.args (JSON-born, special floats already strings),
    so a C-speed key sort replaces the checking walk; the result is the same (tested on real stores)."""
    vector = (_sorted_copy if trusted else canonical)(
        {
            "schema": VECTOR_SCHEMA,
            "op": op,
            "suite": suite,
            "machine": machine,
            "mesh_shape": list(mesh_shape),
            "inputs": inputs,
            "kwargs": kwargs,
            "timeout": float(timeout),
            "config_hash": config_hash,
            "sources": sorted(set(sources or [])),
        }
    )
    vector["id"] = _canonical_id(vector)
    return vector


def decode(payload: bytes) -> dict[str, Any]:
    try:
        vector = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise VectorError(f"malformed vector payload: {exc}") from None
    if not isinstance(vector, dict):
        raise VectorError("malformed vector payload: not a map")
    schema = vector.get("schema")
    if not isinstance(schema, int):
        raise VectorError("malformed vector payload: no integer schema version")
    if schema > VECTOR_SCHEMA:
        raise VectorError(f"vector schema {schema} is newer than this sweepctl understands ({VECTOR_SCHEMA})")
    missing = [key for key in REQUIRED if key not in vector]
    if missing:
        raise VectorError(f"malformed vector payload: missing {', '.join(missing)}")
    return vector


def tensor_slots(vector: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(slot, tensor description) for every tensor argument: positions as "0", "1"…, kwargs by name."""
    for index, value in enumerate(vector["inputs"]):
        yield from _tensors_in(str(index), value)
    for name, value in vector["kwargs"].items():
        yield from _tensors_in(name, value)


def _tensors_in(slot: str, value: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(value, dict) and "tensor" in value:
        yield slot, value["tensor"]
    elif isinstance(value, list):  # concat's list of tensors
        for index, item in enumerate(value):
            yield from _tensors_in(f"{slot}.{index}", item)
