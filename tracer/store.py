"""The master store: one JSON file in tt-metal's current dialect, indexed by config_hash.

Merging is a hash lookup (tt-metal rescans every config of the op). Executions are kept per
(source, trace_uid): the same trace run imported twice counts once, distinct runs add up
(tt-metal keeps the max). Writes are atomic: temp file in the same directory, fsync, rename.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tracer.args import canonical_arguments, count_unparsed
from tracer.confighash import config_hash
from tracer.entry import TracedEntry
from tracer.errors import InputError
from tracer.machine import machine_label
from tracer.master import STORE_SCHEMA, is_master, load_json, read_master
from tracer.optrace import is_call_record, read_trace_dir

_HF_MODEL = re.compile(r"\[HF_MODEL:([^\]]+)\]")


def model_of(source: Any) -> str:
    """`path.py [HF_MODEL:org/name]` -> `org/name`; otherwise the source path itself."""
    text = str(source or "unknown")
    match = _HF_MODEL.search(text)
    return match.group(1).strip() if match else text.strip()


@dataclass
class MergeSummary:
    """What an import or a trace added: per op, configs new to the store and configs it already had."""

    new: Counter = field(default_factory=Counter)
    known: Counter = field(default_factory=Counter)
    hash_mismatches: int = 0

    def as_dict(self) -> dict[str, Any]:
        ops = sorted(set(self.new) | set(self.known))
        return {
            "new_configs": sum(self.new.values()),
            "known_configs": sum(self.known.values()),
            "stored_hashes_not_reproduced": self.hash_mismatches,
            "per_op": {op: {"new": self.new[op], "known": self.known[op]} for op in ops},
        }


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_inputs(paths: Iterable[str]) -> list[TracedEntry]:
    """Every entry of the given master files and operation_tracer directories; all or nothing.

    An input without trace_uid gets `file-<sha256 of its bytes>`, so re-importing the same file
    is idempotent while two different files add their counts.
    """
    entries: list[TracedEntry] = []
    for path in paths:
        if os.path.isdir(path):
            uid = "dir-" + hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]
            entries.extend(read_trace_dir(path, source=path, machine_info=None, trace_uid=uid))
            continue
        data = load_json(path)
        uid = "file-" + _file_digest(path)[:16]
        if is_master(data):
            entries.extend(read_master(data, path, default_uid=uid))
        elif is_call_record(data):
            raise InputError(path, "an operation_tracer call file: import its directory instead")
        else:
            raise InputError(path, 'unknown dialect: neither a master store ("operations") nor a trace directory')
    return entries


class MasterStore:
    def __init__(self) -> None:
        self.ops: dict[str, dict[str, dict[str, Any]]] = {}  # op -> config_hash -> current-dialect entry
        self._next_id = 1

    @classmethod
    def load(cls, path: str, missing_ok: bool = True) -> MasterStore:
        store = cls()
        if missing_ok and not os.path.exists(path):
            return store
        data = load_json(path)
        store.merge(read_master(data, path))
        return store

    def __len__(self) -> int:
        return sum(len(configs) for configs in self.ops.values())

    def merge(self, entries: Iterable[TracedEntry]) -> MergeSummary:
        summary = MergeSummary()
        for entry in entries:
            info = entry.executions[0].get("machine_info") if entry.executions else None
            digest = config_hash(entry.op, entry.arguments, info)
            if entry.stored_hash is not None and entry.stored_hash != digest:
                summary.hash_mismatches += 1
            configs = self.ops.setdefault(entry.op, {})
            existing = configs.get(digest)
            if existing is None:
                config_id = entry.config_id if entry.config_id is not None else self._next_id
                if isinstance(config_id, int):
                    self._next_id = max(self._next_id, config_id + 1)
                configs[digest] = {
                    "config_id": config_id,
                    "config_hash": digest,
                    "arguments": entry.arguments,
                    "executions": [dict(run) for run in entry.executions],
                }
                summary.new[entry.op] += 1
            else:
                _merge_executions(existing["executions"], entry.executions)
                summary.known[entry.op] += 1
        return summary

    def to_json(self) -> dict[str, Any]:
        operations = {op: {"configurations": list(configs.values())} for op, configs in sorted(self.ops.items())}
        return {
            "operations": operations,
            "metadata": {
                "models": sorted(self.models()),
                "unique_operations": len(self.ops),
                "total_configurations": len(self),
                "operations_summary": {op: len(c) for op, c in sorted(self.ops.items())},
                "last_updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "sweepctl_schema": STORE_SCHEMA,
            },
        }

    def save(self, path: str) -> None:
        """Atomic: readers see the old store or the new one, never half of it."""
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".store-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.to_json(), handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

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
            machines[machine_label(entry["executions"][0].get("machine_info"))] += 1
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
