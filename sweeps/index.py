"""The store index: a master store compiled to what expansion reads, once per store version.

Expanding a 50,000-config store from its JSON means parsing 60 MB and canonicalising every
argument (~35 µs a config), and enqueue would pay it on every run. The index keeps each config's
op, config_hash, sources, machine info, and the model_traced vector it becomes on its traced
machine (id and wire bytes, whose inputs and kwargs are its canonical arguments), plus the table
of distinct tensors, as one msgpack file in the cache dir. A config traced on several machines has
one row (and one vector) per machine, each with the sources traced there. It is keyed by the store file's stamp
(device, inode, size, mtime) and by a digest of tracer/ and sweeps/ source (canonicalising,
routing, timeouts and the vector encoding are all baked in), so an import (which rewrites the
store) or a change to sweepctl rebuilds it and nothing stale is ever read. A missing, unreadable
or foreign index is rebuilt; an unwritable cache dir costs speed, never a run."""

from __future__ import annotations

import functools
import hashlib
import os
import struct
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import orjson
import structlog

from sweeps import configobjects
from sweeps.catalogue import lookup, test_ops_enabled, timeout_for
from sweeps.meshplan import core_bounds, topology
from sweeps.profiles import Routing, routing
from sweeps.validate import TensorTable
from sweeps.vector import assemble, packed_args, tensor_keys
from tracer.args import canonical_arguments, count_unparsed
from tracer.machine import hardware_summary
from tracer.store import MasterStore, atomic_write, bulk

INDEX_SCHEMA = 4
UNKNOWN_SOURCE = "unknown"  # tt-metal's loader's default for an execution without a source
_HEADER = struct.Struct(">Q")
_KEYS = ""  # the section of tensor keys (no op is named "")
_CODE = ("tracer", "sweeps")  # canonicalising, routing, timeouts and vector encoding are all baked in
log = structlog.get_logger("sweepctl.index")
MODEL_TRACED = "model_traced"


@dataclass(slots=True)
class TracedConfig:
    """One config of the store as expansion sees it, with the model_traced vector it becomes on its
    traced machine already assembled (id and wire bytes: `enqueue` without `--machine` joins
    nothing). Its canonical inputs and kwargs are slices of those bytes (keys sorted); its tensors
    are positions in the index's TensorTable; `untraced` says which argument the trace could not read
    or did not record (sweeps.index.untraced). One `routing` object is shared by every config traced
    on one machine."""

    op: str
    config_hash: str
    sources: list[str]  # sorted, distinct
    routing: Routing
    vid: str
    wire: bytes
    args_at: Sequence[int]  # [where the inputs start in wire, inputs length, kwargs length]
    tensors: Sequence[Any]  # flat [slot, table position, ...]
    untraced: str | None
    reach: Sequence[Any]  # [x, y, topology]: its highest core and ttnn.Topology (sweeps.meshplan.plan_of)
    traced_bin: bytes  # the packed hardware summary of the traced machine (the vector's traced_machine)

    def packed_args(self) -> tuple[bytes, bytes]:
        return packed_args(self.wire, *self.args_at)

    @property
    def canonical(self) -> dict[str, Any]:
        inputs, kwargs = self.packed_args()
        return {"args": msgpack.unpackb(inputs), "kwargs": msgpack.unpackb(kwargs)}


class Index:
    """op -> its configs in store order; an op's rows are unpacked on first use, so `--op pad`
    reads pad's configs only. Rows: [config_hash, sources slot, machine slot, vid, wire, args_at,
    tensors, untraced, reach]; equal source lists and machine infos are stored once."""

    def __init__(
        self, rows: dict[str, list[list[Any]] | Callable[[], bytes]], machines: list[Any], sources: list[list[str]],
        tensors: TensorTable,
    ) -> None:  # fmt: skip
        self._rows = rows
        self._machines = machines
        self._sources = sources
        self._routes = [routing(m) for m in machines]
        self._traced = [msgpack.packb(hardware_summary(m), use_bin_type=True) for m in machines]
        self._configs: dict[str, list[TracedConfig]] = {}
        self.tensors = tensors

    def __contains__(self, op: object) -> bool:
        return op in self._rows

    def ops(self) -> list[str]:
        return sorted(self._rows)

    def configs(self, op: str) -> list[TracedConfig]:
        found = self._configs.get(op)
        if found is None:
            rows = self._rows.get(op, [])
            routes, sources, traced = self._routes, self._sources, self._traced
            with bulk():
                if callable(rows):  # a section of the index file
                    rows = msgpack.unpackb(rows(), raw=False, use_list=False)
                found = self._configs[op] = [
                    TracedConfig(op, h, sources[s], routes[m], vid, wire, at, tensors, untraced, reach, traced[m])
                    for h, s, m, vid, wire, at, tensors, untraced, reach in rows
                ]  # fmt: skip
        return found

    def encode(self, stamp: list[Any]) -> bytes:
        """8 bytes of header length, the msgpack header, then one section per op and one for the
        tensor keys: a reader unpacks the header only, and reads a section when it is asked for."""
        body, sections = bytearray(), {}
        for name, rows in [*self._rows.items(), (_KEYS, self.tensors.keys)]:
            blob = rows() if callable(rows) else msgpack.packb(rows, use_bin_type=True)
            sections[name] = [len(body), len(blob)]
            body += blob
        header = {"stamp": stamp, "machines": self._machines, "sources": self._sources,
                  "digests": self.tensors.digests(), "sections": sections}  # fmt: skip
        header = msgpack.packb(header, use_bin_type=True)
        return _HEADER.pack(len(header)) + header + body

    @classmethod
    def open(cls, path: Path, stamp: list[Any]) -> Index | None:
        """The index in `path` if it was made for `stamp`; sections are read from the open file
        later (an index replaced meanwhile is a new file: this one stays whole)."""
        file = _IndexFile(path)
        size = _HEADER.unpack(file.read(0, _HEADER.size))[0]
        doc = msgpack.unpackb(file.read(_HEADER.size, size), raw=False)
        if not isinstance(doc, dict) or doc.get("stamp") != stamp:
            return None
        start = _HEADER.size + size

        def section(name: str) -> Callable[[], bytes]:
            at, length = doc["sections"][name]
            return lambda: file.read(start + at, length)

        keys = section(_KEYS)
        rows = {name: section(name) for name in doc["sections"] if name != _KEYS}
        tensors = TensorTable(lambda: msgpack.unpackb(keys(), raw=False), doc["digests"])
        return cls(rows, doc["machines"], doc["sources"], tensors)


class _IndexFile:
    """An open index file, closed when nothing that reads its sections is left."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        weakref.finalize(self, os.close, self.fd)
        self.size = os.fstat(self.fd).st_size

    def read(self, at: int, length: int) -> bytes:
        if at + length > self.size:
            raise ValueError(f"index file ends at {self.size}, before {at + length}")
        return os.pread(self.fd, length, at)


def cache_dir() -> Path:
    root = os.environ.get("SWEEPCTL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sweepctl"
    )
    return Path(root)


@functools.cache
def _code_digest() -> str:
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(p for folder in _CODE for p in (root / folder).glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _sorted(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


def _row(op: str, entry: dict[str, Any], runs: list[dict[str, Any]], slot: int, route: Routing, traced_bin: bytes,
         table: TensorTable, source_slots: dict[tuple[str, ...], int]) -> list[Any]:  # fmt: skip
    """The row of one config on one of its traced machines (`runs`: its executions there)."""
    canonical = _sorted(canonical_arguments(entry["arguments"]))
    tensors = tensor_keys({"inputs": canonical["args"], "kwargs": canonical["kwargs"]})
    sources = sorted({str(run.get("source") or UNKNOWN_SOURCE) for run in runs})
    sources_slot = source_slots.setdefault(tuple(sources), len(source_slots))
    inputs = msgpack.packb(canonical["args"], use_bin_type=True)
    kwargs = msgpack.packb(canonical["kwargs"], use_bin_type=True)
    timeout = timeout_for(op, route.profile)
    vid, wire, at = assemble(op, MODEL_TRACED, route.machine, route.mesh_shape, inputs, kwargs, timeout,
                             entry["config_hash"], sources, traced_bin)  # fmt: skip
    call = {"inputs": canonical["args"], "kwargs": canonical["kwargs"]}
    return [entry["config_hash"], sources_slot, slot, vid, wire, (at, len(inputs), len(kwargs)), table.flat(tensors),
            untraced(op, canonical), (*core_bounds(call), topology(call))]  # fmt: skip


def untraced(op: str, canonical: dict[str, Any]) -> str | None:
    """Why the trace cannot make this call (its vector's NOT_RUN reason), or None: the first argument
    it could not read (traced as an unsupported type, an unrepairable fragment), else a config object
    sweepctl cannot build (sweeps.configobjects), else the first argument the op's golden needs that
    it did not record. Decided here, never a TypeError at run time."""
    where = unreadable_argument(canonical)
    if where is not None:
        return f"argument {where} could not be read from the trace"
    unbuildable = configobjects.unknown(canonical["args"], canonical["kwargs"])
    if unbuildable is not None:
        return unbuildable
    opdef = lookup(op)
    missing = opdef.missing(len(canonical["args"]), canonical["kwargs"]) if opdef is not None else None
    return f"argument {missing} was not traced" if missing is not None else None


def unreadable_argument(canonical: dict[str, Any]) -> str | None:
    """The first non-tensor argument holding something the trace could not read, or None."""
    for where, value in [*enumerate(canonical["args"]), *canonical["kwargs"].items()]:
        if unreadable(value):
            return str(where)
    return None


def unreadable(value: Any) -> bool:
    """An argument that is not a tensor and holds something the trace could not read."""
    return not (isinstance(value, dict) and "tensor" in value) and bool(count_unparsed(value))


def build(store: MasterStore) -> Index:
    """The index of a loaded store: one row per config and traced machine, so a config traced on
    two machines makes a vector for each (identical machine infos share one slot and one routing).
    An execution without machine info makes a row of its own only when no execution names one."""
    slots: dict[bytes, int] = {}
    machines: list[Any] = []
    routes: list[Routing] = []
    traced: list[bytes] = []
    rows: dict[str, list[list[Any]] | Callable[[], bytes]] = {}
    table = TensorTable()
    source_slots: dict[tuple[str, ...], int] = {}
    with bulk():
        for op, entry in store.entries():
            per_machine: dict[int, list[dict[str, Any]]] = {}
            unplaced = []  # executions that name no machine: their sources join every machine's vector
            placed = any(run.get("machine_info") is not None for run in entry["executions"])
            for run in entry["executions"]:
                info = run.get("machine_info")
                if info is None and placed:
                    unplaced.append(run)
                    continue
                slot = slots.setdefault(orjson.dumps(info, option=orjson.OPT_SORT_KEYS), len(machines))
                if slot == len(machines):
                    machines.append(info)
                    routes.append(routing(info))
                    traced.append(msgpack.packb(hardware_summary(info), use_bin_type=True))
                per_machine.setdefault(slot, []).append(run)
            for slot, runs in per_machine.items():
                rows.setdefault(op, []).append(
                    _row(op, entry, runs + unplaced, slot, routes[slot], traced[slot], table, source_slots)
                )
    return Index(rows, machines, [list(s) for s in source_slots], table)


def _stamp(path: str) -> list[Any]:
    st = os.stat(path)
    where = [os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
    return [INDEX_SCHEMA, _code_digest(), test_ops_enabled(), *where]


def _index_path(path: str) -> Path:
    return cache_dir() / "index" / (hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:24] + ".msgpack")


def load(path: str) -> Index:
    """The store's index: read from the cache when it matches the store file, else built and saved."""
    try:
        stamp = _stamp(path)
    except OSError:
        stamp = None  # let the store load say what is wrong with the path
    cached = _index_path(path) if stamp else None
    if cached is not None and cached.is_file():
        try:
            index = Index.open(cached, stamp)
        except (OSError, ValueError, TypeError, KeyError, struct.error, msgpack.UnpackException) as exc:
            log.warning("index_unreadable", path=str(cached), error=str(exc))
            index = None
        if index is not None:
            return index
    index = build(MasterStore.load(path, missing_ok=False))
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(str(cached), index.encode(stamp))
        except OSError as exc:
            log.warning("index_not_saved", path=str(cached), error=str(exc))
    return index
