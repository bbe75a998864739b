"""One traced configuration as read from any dialect, before it joins the store."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson

from tracer.machine import normalize_machine_info

_EXECUTION_KEYS = frozenset({"source", "machine_info", "count", "trace_uid"})
CONFIG_EXTRAS = ("sweep_source_hash",)  # config-level keys tt-metal writes besides ours, kept as read


@dataclass(slots=True)
class TracedEntry:
    op: str  # canonical dotted name
    arguments: dict[str, Any]  # current-dialect argument dict, kept as traced (the hash covers it)
    executions: list[dict[str, Any]] = field(default_factory=list)
    stored_hash: str | None = None  # the hash the file carried (or the trace reader computed), if any
    config_id: Any = None  # kept when re-reading a store we wrote
    extras: dict[str, Any] = field(default_factory=dict)  # CONFIG_EXTRAS present on the config
    key: int | None = None  # argument_key(argument_text(arguments)) when the reader computed it already


def argument_text(arguments: dict[str, Any]) -> bytes:
    """The arguments as sorted JSON: what tt-metal compares to deduplicate configs (as md5)."""
    try:
        return orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # ints beyond 64 bits
        return json.dumps(arguments, sort_keys=True).encode()


def argument_key(text: bytes) -> int:
    """Where an argument set is looked up within an op: Python's hash of argument_text (a tenth of
    the cost of a digest; in-process only, never stored). Equal keys are confirmed by comparing
    the texts (MasterStore), so a collision can never merge two configs."""
    return hash(text)


def normalize_execution(raw: dict[str, Any], default_uid: str | None = None) -> dict[str, Any]:
    """Fixed key order, int count >= 1, machine info normalised; unknown keys kept after ours.
    Keys without a value are left out, as tt-metal leaves them out: its loader then applies its
    own defaults (a missing source reads as "unknown")."""
    count = raw.get("count", 1)
    if type(count) is not int or count < 1:  # the common case skips the conversion (bools take it)
        try:
            count = max(1, int(count))
        except (TypeError, ValueError):
            count = 1
    out: dict[str, Any] = {}
    source = raw.get("source")
    if source is not None:
        out["source"] = source
    info = normalize_machine_info(raw.get("machine_info"))
    if info is not None:
        out["machine_info"] = info
    out["count"] = count
    uid = raw.get("trace_uid") or default_uid
    if uid:
        out["trace_uid"] = uid
    if not _EXECUTION_KEYS.issuperset(raw):
        out.update({k: v for k, v in raw.items() if k not in _EXECUTION_KEYS})
    return out
