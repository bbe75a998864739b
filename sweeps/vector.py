"""The vector: what a worker runs, as canonical msgpack with an id hashed from its content.

A vector is a map with string keys only: schema, op, suite, machine, mesh_shape, inputs
(canonical positional args), kwargs, config_hash, sources and traced_machine (the hardware it was
traced on: what tt-metal's exports call its card type) when traced, timeout. Encoding is
canonical (keys sorted, tuples as lists, NaN/Inf as the strings "nan"/"inf"/"-inf"), so the id is
the same in every process and Python version and never depends on a ttnn repr. The id covers the
op, machine, mesh shape, inputs and kwargs only: the same config in two suites keeps one id.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from sweeps.validate import TensorTable, tensor_key

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
    presorted: bool = False,
    traced_machine: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`presorted`: inputs and kwarg values are canonical with every map's keys sorted already (the
    store index's), so the checking walk is skipped; the vector is the same (tested on real stores)."""
    fields = {
        "config_hash": config_hash,
        "inputs": inputs,
        "kwargs": dict(sorted(kwargs.items())) if presorted else kwargs,
        "machine": machine,
        "mesh_shape": list(mesh_shape),
        "op": op,
        "schema": VECTOR_SCHEMA,
        "sources": sorted(set(sources or [])),
        "suite": suite,
        "timeout": float(timeout),
        "traced_machine": traced_machine,
    }  # already in sorted key order, as canonical() would put them
    vector = fields if presorted else canonical(fields)
    vector["id"] = _canonical_id(vector)
    return vector


_OPTIONAL = ("config_hash", "sources", "traced_machine", "id")
_KEY = {name: msgpack.packb(name) for name in (*REQUIRED, *_OPTIONAL)}
_IDENTITY_HEAD = msgpack.packb({key: None for key in IDENTITY})[:1]  # a map of 5 entries
_VECTOR_HEAD = msgpack.packb({key: None for key in (*REQUIRED, *_OPTIONAL)})[:1]
NIL = msgpack.packb(None)


_PACK = msgpack.Packer(use_bin_type=True).pack  # one packer: packb builds a new one per call


@functools.lru_cache(maxsize=4096)
def _fixed(op: str, suite: str, machine: str, mesh_shape: tuple[int, ...], timeout: float) -> tuple[bytes, ...]:
    """The packed pieces every vector of one op, suite and machine shares."""
    k = _KEY
    op_b, machine_b, mesh_b = _PACK(op), _PACK(machine), _PACK(list(mesh_shape))
    tail = b"".join((k["machine"], machine_b, k["mesh_shape"], mesh_b, k["op"], op_b))
    wire_mid = b"".join((tail, k["schema"], _PACK(VECTOR_SCHEMA), k["sources"]))
    wire_end = b"".join((k["suite"], _PACK(suite), k["timeout"], _PACK(float(timeout)), k["traced_machine"]))
    return tail, wire_mid, wire_end


def assemble(
    op: str,
    suite: str,
    machine: str,
    mesh_shape: list[int] | tuple[int, ...],
    inputs_bin: bytes,
    kwargs_bin: bytes,
    timeout: float,
    config_hash: str | None,
    sources: list[str],
    traced_bin: bytes = NIL,
) -> tuple[str, bytes, int]:
    """(id, wire bytes, where inputs_bin starts in them) of make_vector(..., presorted=True) from
    inputs and kwargs already packed (the store index's): msgpack is a concatenation of its parts,
    so a vector map is joined from them without decoding anything. `sources` must be sorted and
    distinct; `traced_bin` is the packed traced_machine. Tested byte-equal."""
    k = _KEY
    tail, wire_mid, wire_end = _fixed(op, suite, machine, tuple(mesh_shape), timeout)
    args = (k["inputs"], inputs_bin, k["kwargs"], kwargs_bin)
    vid = hashlib.sha256(b"".join((_IDENTITY_HEAD, *args, tail))).hexdigest()[:32]
    head = b"".join((_VECTOR_HEAD, k["config_hash"], _PACK(config_hash), k["inputs"]))
    wire = b"".join((head, inputs_bin, k["kwargs"], kwargs_bin, wire_mid, _PACK(sources), wire_end, traced_bin,
                     k["id"], _PACK(vid)))  # fmt: skip
    return vid, wire, len(head)


def packed_args(wire: bytes, at: int, inputs_len: int, kwargs_len: int) -> tuple[bytes, bytes]:
    """(inputs_bin, kwargs_bin) back out of an assembled vector: `at` is where assemble put the inputs."""
    kwargs_at = at + inputs_len + len(_KEY["kwargs"])
    return wire[at : at + inputs_len], wire[kwargs_at : kwargs_at + kwargs_len]


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


@dataclass(slots=True)
class Encoded:
    """A vector as the coordinator handles it: its wire bytes, plus the few fields it routes,
    host-validates and records by (so a 50,000-vector enqueue never decodes a vector)."""

    id: str
    op: str
    machine: str
    config_hash: str | None
    payload: bytes
    tensors: Sequence[Any]  # flat [slot, position in the expansion's TensorTable, slot, position, ...]
    opens: Any = None  # the mesh it opens (sweeps.meshplan.open_key), when expansion knows it: enqueue groups by it

    @classmethod
    def of(cls, vector: dict[str, Any], table: TensorTable) -> Encoded:
        return cls(vector["id"], vector["op"], vector["machine"], vector.get("config_hash"), payload(vector),
                   table.flat(tensor_keys(vector)))  # fmt: skip

    def decoded(self) -> dict[str, Any]:
        return decode(self.payload)


def tensor_keys(vector: dict[str, Any]) -> list[tuple[str, str]]:
    """(slot, sweeps.validate.tensor_key) per tensor argument: what host validation is looked up by."""
    return [(where, tensor_key(tensor)) for where, tensor in tensor_slots(vector)]


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
