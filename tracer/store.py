"""The master store: one JSON file in tt-metal's current dialect.

A config is one argument set of one op, as tt-metal deduplicates them: the same arguments traced
on several machines stay one config with one config_hash and one execution per run. Merging is a
dict lookup keyed by the arguments' sorted JSON (tt-metal compares the same JSON, rescanning every
config of the op), so a config is found whatever version of config_hash it carries. A stored
config_hash is tt-metal's identity and is kept as is; a new config gets the current version.
`hash_versions()` recomputes them all (tt-metal's preflight check) and says which version each
stored hash is.

Executions are kept per (source, trace_uid): the same trace run imported twice counts once,
distinct runs add up (tt-metal keeps the max). Writes are atomic: temp file in the same
directory, fsync, rename. The written document follows tt-metal's: `last_updated` as
`%Y-%m-%d %H:%M:%S`, `metadata.trace_uid` and each config's `sweep_source_hash` kept, and keys
without a value left out.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import gc
import hashlib
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tracer import jsonio
from tracer.args import canonical_arguments, count_unparsed
from tracer.confighash import CURRENT, LEGACY, config_hash, hash_version
from tracer.entry import TracedEntry, argument_key, argument_text
from tracer.errors import InputError
from tracer.machine import machine_label
from tracer.master import STORE_SCHEMA, is_master, load_json, metadata_uid, read_master
from tracer.optrace import is_call_record, read_trace_dir, trace_dir_metadata

MERGED_TRACES = "sweepctl_merged_traces"  # metadata key: trace uids `store pull` merged (each once)
_HF_MODEL = re.compile(r"\[HF_MODEL:([^\]]+)\]")


@functools.lru_cache(maxsize=4096)
def _model_of_text(text: str) -> str:
    match = _HF_MODEL.search(text)
    return match.group(1).strip() if match else text.strip()


def model_of(source: Any) -> str:
    """`path.py [HF_MODEL:org/name]` -> `org/name`; otherwise the source path itself."""
    return _model_of_text(str(source or "unknown"))


@dataclass
class MergeSummary:
    """What an import or a trace added: per op, configs new to the store and configs it already had."""

    new: Counter = field(default_factory=Counter)
    known: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        ops = sorted(set(self.new) | set(self.known))
        return {
            "new_configs": sum(self.new.values()),
            "known_configs": sum(self.known.values()),
            "per_op": {op: {"new": self.new[op], "known": self.known[op]} for op in ops},
        }


@contextlib.contextmanager
def bulk() -> Iterator[None]:
    """No cyclic GC while building 100k-config object graphs: each generation-2 pass would rescan
    everything already loaded, which makes import quadratic-ish. Nothing here creates cycles.

    On the way out what was allocated meanwhile goes straight to the oldest generation (gc.freeze
    then gc.unfreeze: two list splices): re-enabled with them young, the collector would traverse
    them all (2M for 100k configs, ~0.6 s) at its next young collection and again in each older
    generation. Nothing stays frozen, so a later full collection still finds their cycles (objects
    a caller froze itself are unfrozen too: the worker daemon and the executor, which freeze theirs,
    never get here)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Inputs:
    """What `sweepctl store import` read: every entry, and the trace_uid the inputs name in their
    metadata (the last one wins), which the written store keeps as `metadata.trace_uid`."""

    entries: list[TracedEntry] = field(default_factory=list)
    trace_uid: str | None = None


def load_inputs(paths: Iterable[str]) -> Inputs:
    """Every entry of the given master files and trace directories; all or nothing.

    An input without trace_uid gets `file-<sha256 of its bytes>` (a directory `dir-<path digest>`),
    so re-importing the same file is idempotent while two different files add their counts.
    """
    inputs = Inputs()
    with bulk():
        for path in paths:
            entries, uid = _read_input(path)
            inputs.entries.extend(entries)
            inputs.trace_uid = uid or inputs.trace_uid
    return inputs


def read_inputs(paths: Iterable[str]) -> list[TracedEntry]:
    return load_inputs(paths).entries


def _read_input(path: str) -> tuple[list[TracedEntry], str | None]:
    if os.path.isdir(path):
        meta = trace_dir_metadata(path)
        uid = meta.trace_uid or "dir-" + hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]
        entries = read_trace_dir(path, meta.source, meta.machine_info, uid, with_values=True)
        return entries, meta.trace_uid
    data = load_json(path)
    if is_master(data):
        entries = list(read_master(data, path))
        anonymous = [run for e in entries for run in e.executions if "trace_uid" not in run]
        if anonymous:
            uid = "file-" + _file_digest(path)[:16]
            for run in anonymous:
                run["trace_uid"] = uid
        return entries, metadata_uid(data)
    if is_call_record(data):
        raise InputError(path, "an operation_tracer call file: import its directory instead")
    raise InputError(path, 'unknown dialect: neither a master store ("operations") nor a trace directory')


class MasterStore:
    def __init__(self) -> None:
        self.ops: dict[str, dict[int, dict[str, Any]]] = {}  # op -> argument_key -> current-dialect entry
        self.trace_uid: str | None = None  # metadata.trace_uid, kept across read and write
        self.merged_traces: set[str] = set()  # metadata.sweepctl_merged_traces: fleet trace results pulled in
        self._next_id = 1

    @classmethod
    def load(cls, path: str, missing_ok: bool = True) -> MasterStore:
        if missing_ok and not os.path.exists(path):
            return cls()
        with bulk():
            return cls.from_data(load_json(path), path)

    @classmethod
    def from_data(cls, data: Any, path: str) -> MasterStore:
        """The store of a parsed master file (`path` names it in messages)."""
        store = cls()
        with bulk():
            store.merge(read_master(data, path))
        store.trace_uid = metadata_uid(data)
        store.merged_traces = merged_traces(data)
        return store

    def __len__(self) -> int:
        return sum(len(configs) for configs in self.ops.values())

    def merge(self, entries: Iterable[TracedEntry]) -> MergeSummary:
        with bulk():
            return self._merge(entries)

    def _merge(self, entries: Iterable[TracedEntry]) -> MergeSummary:
        summary = MergeSummary()
        op, configs = None, {}
        for entry in entries:
            if entry.op != op:  # entries come grouped by op: one lookup per op, not per config
                op = entry.op
                configs = self.ops.get(op)
                if configs is None:
                    configs = self.ops[op] = {}
            key = entry.key if entry.key is not None else argument_key(argument_text(entry.arguments))
            existing = configs.get(key)
            while existing is not None and argument_text(existing["arguments"]) != argument_text(entry.arguments):
                key += 1  # another argument set with the same key: the next free slot (nothing is ever removed)
                existing = configs.get(key)
            if existing is None:
                config_id = entry.config_id if entry.config_id is not None else self._next_id
                if isinstance(config_id, int) and config_id >= self._next_id:
                    self._next_id = config_id + 1
                digest = entry.stored_hash or config_hash(entry.op, entry.arguments, _machine(entry.executions))
                configs[key] = {
                    "config_id": config_id,
                    "config_hash": digest,
                    "arguments": entry.arguments,
                    "executions": [dict(run) for run in entry.executions],
                    **entry.extras,
                }
                summary.new[entry.op] += 1
            else:
                _merge_executions(existing["executions"], entry.executions)
                for name, value in entry.extras.items():
                    existing.setdefault(name, value)
                summary.known[entry.op] += 1
        return summary

    def config(self, op: str, digest: str) -> dict[str, Any] | None:
        """The first config of `op` whose config_hash is `digest` (None: no such config)."""
        return next((entry for _, entry in self.entries(op) if entry["config_hash"] == digest), None)

    def hash_versions(self) -> dict[str, Any]:
        """Which version of config_hash reproduces each stored hash: counts per version, and the
        configs neither version reproduces (stale). Both versions agreeing count as current."""
        versions = {CURRENT: 0, LEGACY: 0}
        stale = []
        for op, entry in self.entries():
            machine = _machine(entry["executions"])
            version = hash_version(entry["config_hash"], op, entry["arguments"], machine)
            if version is not None:
                versions[version] += 1
                continue
            stale.append(
                {
                    "op": op,
                    "config_id": entry["config_id"],
                    "stored": entry["config_hash"],
                    "recomputed": config_hash(op, entry["arguments"], machine),
                }
            )
        return {"configs": len(self), "versions": versions, "stale": stale}

    def verify(self) -> list[dict[str, Any]]:
        """Configs whose stored config_hash neither version reproduces from their arguments."""
        return self.hash_versions()["stale"]

    def to_json(self) -> dict[str, Any]:
        operations = {op: {"configurations": list(configs.values())} for op, configs in sorted(self.ops.items())}
        metadata: dict[str, Any] = {
            "models": sorted(self.models()),
            "unique_operations": len(self.ops),
            "total_configurations": len(self),
            "operations_summary": {op: len(c) for op, c in sorted(self.ops.items())},
            "last_updated": _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),  # tt-metal's format, local time
            "sweepctl_schema": STORE_SCHEMA,
        }
        if self.trace_uid:
            metadata["trace_uid"] = self.trace_uid
        if self.merged_traces:
            metadata[MERGED_TRACES] = sorted(self.merged_traces)
        return {"operations": operations, "metadata": metadata}

    def save(self, path: str) -> None:
        """Atomic: readers see the old store or the new one, never half of it."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with bulk():
            data = jsonio.dumps(self.to_json())
        atomic_write(path, data)

    def entries(self, op: str | None = None) -> Iterable[tuple[str, dict[str, Any]]]:
        for name in sorted(self.ops) if op is None else [op]:
            for entry in self.ops.get(name, {}).values():
                yield name, entry

    def models(self) -> set[str]:
        return {model_of(run.get("source")) for _, e in self.entries() for run in e["executions"]}

    def stats(self) -> dict[str, Any]:
        per_op: dict[str, dict[str, Any]] = {}
        machines: Counter = Counter()
        unparsed_total = 0
        for op, entry in self.entries():
            row = per_op.setdefault(op, {"configs": 0, "executions": 0, "unparsed_args": 0, "models": set()})
            unparsed = count_unparsed(canonical_arguments(entry["arguments"]))
            row["configs"] += 1
            row["unparsed_args"] += unparsed
            unparsed_total += unparsed
            for run in entry["executions"]:
                row["executions"] += run["count"]
                row["models"].add(model_of(run.get("source")))
            for label in {machine_label(run.get("machine_info")) for run in entry["executions"]}:
                machines[label] += 1  # configs per machine: one traced on two machines counts on both
        for row in per_op.values():
            row["models"] = sorted(row["models"])
        return {
            "ops": len(self.ops),
            "configs": len(self),
            "models": sorted(self.models()),
            "machines": dict(sorted(machines.items())),
            "unparsed_args": unparsed_total,
            "per_op": per_op,
        }


def merged_traces(data: Any) -> set[str]:
    """The trace uids a parsed store says `store pull` merged into it."""
    meta = data.get("metadata") if isinstance(data, dict) else None
    merged = meta.get(MERGED_TRACES) if isinstance(meta, dict) else None
    return {u for u in merged if isinstance(u, str)} if isinstance(merged, list) else set()


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """An exclusive lock on `path` (a `.lock` file beside it) for a load-merge-save: two merges into
    one store run one after the other, so neither loses the other's configs."""
    import fcntl

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(f"{path}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write(path: str, data: bytes) -> None:
    """Readers see the old file or the new one, never half of it: temp file in the same directory,
    fsync, rename. The file keeps an existing file's mode."""
    fd, tmp = tempfile.mkstemp(prefix=".sweepctl-", suffix=".tmp", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _file_mode(path: str) -> int:
    """Keep an existing store's mode; a new one gets the umask's default (mkstemp makes 0600)."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _machine(executions: list[dict[str, Any]]) -> dict[str, Any] | None:
    return executions[0].get("machine_info") if executions else None


def _merge_executions(existing: list[dict[str, Any]], incoming: list[dict[str, Any]]) -> None:
    index = {(run.get("source"), run.get("trace_uid")): run for run in existing}
    for run in incoming:
        key = (run.get("source"), run.get("trace_uid"))
        if key in index:
            index[key]["count"] = max(index[key]["count"], run["count"])  # the same trace run seen again
        else:
            copy = dict(run)
            existing.append(copy)
            index[key] = copy
