"""The store index: a master store compiled to what expansion reads, once per store version.

Expanding a 50,000-config store from its JSON means parsing 60 MB and canonicalising every
argument (~35 µs a config), and enqueue would pay it on every run. The index keeps each config's
op, config_hash, sources, machine info and canonical arguments (keys sorted, as vectors want
them) as one msgpack file in the cache dir. It is keyed by the store file's stamp (device, inode,
size, mtime) and by the digest of the canonicaliser's own source, so an import (which rewrites
the store) or a change to sweepctl rebuilds it and nothing stale is ever read. A missing,
unreadable or foreign index is rebuilt; an unwritable cache dir costs speed, never a run.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import orjson
import structlog

from sweeps.vector import tensor_keys
from tracer.args import canonical_arguments, count_unparsed
from tracer.store import MasterStore, atomic_write, bulk

INDEX_SCHEMA = 1
_CANONICALISER = ("tracer/args.py", "tracer/cppjson.py", "sweeps/index.py")
log = structlog.get_logger("sweepctl.index")


@dataclass(slots=True)
class TracedConfig:
    """One config of the store as expansion sees it: its canonical inputs and kwargs already packed
    as msgpack (keys sorted), what host validation keys its tensors by, and the first argument the
    trace could not read. `machine_info` objects are shared by every config traced on one machine,
    so routing is memoised per object."""

    op: str
    config_hash: str
    sources: list[str]  # sorted, distinct
    machine_info: dict[str, Any] | None
    inputs_bin: bytes
    kwargs_bin: bytes
    tensors: list[tuple[str, str]]  # (slot, validation key) per tensor argument
    unreadable: str | None

    @property
    def canonical(self) -> dict[str, Any]:
        return {"args": msgpack.unpackb(self.inputs_bin), "kwargs": msgpack.unpackb(self.kwargs_bin)}


class Index:
    """op -> its configs in store order; an op's rows are unpacked on first use, so `--op pad`
    reads pad's configs only."""

    def __init__(self, configs: dict[str, list[TracedConfig] | bytes], machines: list[Any], keys: list[str]):
        self._configs = configs
        self._machines = machines
        self._keys = keys

    def __contains__(self, op: object) -> bool:
        return op in self._configs

    def ops(self) -> list[str]:
        return sorted(self._configs)

    def configs(self, op: str) -> list[TracedConfig]:
        found = self._configs.get(op, [])
        if isinstance(found, bytes):
            machines, keys = self._machines, self._keys
            with bulk():
                rows = msgpack.unpackb(found, raw=False)
                found = [
                    TracedConfig(op, h, sources, machines[m], inputs, kwargs,
                                 [(flat[i], keys[flat[i + 1]]) for i in range(0, len(flat), 2)], unreadable)
                    for h, sources, m, inputs, kwargs, flat, unreadable in rows
                ]  # fmt: skip
            self._configs[op] = found
        return found

    def encode(self, stamp: list[Any]) -> bytes:
        machines: dict[int, int] = {}
        table: list[Any] = []
        keys: dict[str, int] = {}
        ops = {}
        for op in self.ops():
            rows = []
            for c in self.configs(op):
                slot = machines.get(id(c.machine_info))
                if slot is None:
                    slot = machines[id(c.machine_info)] = len(table)
                    table.append(c.machine_info)
                flat = [x for where, key in c.tensors for x in (where, keys.setdefault(key, len(keys)))]
                rows.append([c.config_hash, c.sources, slot, c.inputs_bin, c.kwargs_bin, flat, c.unreadable])
            ops[op] = msgpack.packb(rows, use_bin_type=True)
        doc = {"stamp": stamp, "machines": table, "keys": list(keys), "ops": ops}
        return msgpack.packb(doc, use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes, stamp: list[Any]) -> Index | None:
        doc = msgpack.unpackb(data, raw=False)
        if not isinstance(doc, dict) or doc.get("stamp") != stamp:
            return None
        return cls(dict(doc["ops"]), doc["machines"], doc["keys"])


def cache_dir() -> Path:
    root = os.environ.get("SWEEPCTL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sweepctl"
    )
    return Path(root)


@functools.cache
def _code_digest() -> str:
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for name in _CANONICALISER:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]


def _sorted(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


def traced_config(op: str, entry: dict[str, Any], machine_info: Any) -> TracedConfig:
    canonical = _sorted(canonical_arguments(entry["arguments"]))
    tensors = tensor_keys({"inputs": canonical["args"], "kwargs": canonical["kwargs"]})
    return TracedConfig(
        op,
        entry["config_hash"],
        sorted({str(run.get("source")) for run in entry["executions"]}),
        machine_info,
        msgpack.packb(canonical["args"], use_bin_type=True),
        msgpack.packb(canonical["kwargs"], use_bin_type=True),
        tensors,
        unreadable_argument(canonical),
    )


def unreadable_argument(canonical: dict[str, Any]) -> str | None:
    """The first non-tensor argument holding something the trace could not read, or None."""
    for where, value in [*enumerate(canonical["args"]), *canonical["kwargs"].items()]:
        if not (isinstance(value, dict) and "tensor" in value) and count_unparsed(value):
            return str(where)
    return None


def build(store: MasterStore) -> Index:
    """The index of a loaded store (identical machine infos become one shared object)."""
    machines: dict[bytes, Any] = {}
    configs: dict[str, list[TracedConfig] | bytes] = {}
    with bulk():
        for op, entry in store.entries():
            info = entry["executions"][0].get("machine_info")
            info = machines.setdefault(orjson.dumps(info, option=orjson.OPT_SORT_KEYS), info)
            configs.setdefault(op, []).append(traced_config(op, entry, info))
    return Index(configs, list(machines.values()), [])


def _stamp(path: str) -> list[Any]:
    st = os.stat(path)
    return [INDEX_SCHEMA, _code_digest(), os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


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
            index = Index.decode(cached.read_bytes(), stamp)
        except (OSError, ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
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
