"""Readers for every master-JSON dialect tt-metal has written (oldest first):

1. a configuration is a list of single-key dicts `[{"arg0": {"Tensor": ...}}, {"arg1": "0"}]`,
   possibly with `UnparsedElement` blobs, C++ spellings and stringified scalars;
2. `{"arguments", "source": str|list, "machine_info": dict|list}`;
3. `{"arguments", "contexts": [{"source": [...], "machine_info": [...]}]}`;
4. current: `{"config_id", "config_hash", "arguments": {...}, "executions": [...]}`.

Dialects 2 and 3 can name several machines for one config: they stay one config with one
execution per (source, machine), as tt-metal's tracer migrates them. Legacy spellings (the graph
tracer's `{"Tensor": ...}`, `DataType::X`) are read into the current dialect (tracer.dialect).
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from tracer import jsonio
from tracer.cppjson import repair
from tracer.dialect import current_arguments, has_legacy_spelling
from tracer.entry import CONFIG_EXTRAS, TracedEntry, argument_key, argument_text, normalize_execution
from tracer.errors import InputError
from tracer.opnames import canonical_op_name

STORE_SCHEMA = 1  # metadata.sweepctl_schema of stores we write; newer ones are refused
_NULLS = frozenset({"None", "nullopt", "std::nullopt"})
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")
_MAP_AT_LEAST = 1 << 20  # bytes; smaller files (a trace directory's call files) are read


def load_json(path: str, special_floats: bool = False) -> Any:
    try:
        with open(path, "rb") as handle:
            return jsonio.loads(_contents(handle), special_floats)
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, expected a JSON file") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}:{exc.colno}", f"malformed JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: byte {exc.start}", "not UTF-8 text") from None
    except RecursionError:
        raise InputError(path, "JSON nested too deeply") from None


def _contents(handle: BinaryIO) -> bytes | memoryview:
    """A large file is mapped, not read: orjson parses the page cache in place, which spares a copy
    the size of the file (130 MB for 100k configs, ~0.07 s of page faults on this machine)."""
    if os.fstat(handle.fileno()).st_size >= _MAP_AT_LEAST:
        with contextlib.suppress(OSError, ValueError):  # not a regular file: read it
            return memoryview(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
    return handle.read()


def is_master(data: Any) -> bool:
    return isinstance(data, dict) and "operations" in data


def metadata_uid(data: Any) -> str | None:
    """A parsed store's `metadata.trace_uid`, when it names one."""
    meta = data.get("metadata") if isinstance(data, dict) else None
    uid = meta.get("trace_uid") if isinstance(meta, dict) else None
    return uid if isinstance(uid, str) and uid else None


def read_master(data: Any, path: str, default_uid: str | None = None) -> Iterator[TracedEntry]:
    """Entries of a master JSON document already parsed from `path` (used in error positions).
    Executions without a trace_uid get the document's `metadata.trace_uid`, else `default_uid`."""
    if not is_master(data):
        raise InputError(path, 'unknown dialect: expected a master store with an "operations" object')
    meta = data.get("metadata") or {}
    schema = meta.get("sweepctl_schema", 0) if isinstance(meta, dict) else 0
    if not isinstance(schema, int) or schema > STORE_SCHEMA:
        raise InputError(
            f"{path}: metadata.sweepctl_schema",
            f"store schema {schema!r} is newer than this sweepctl understands ({STORE_SCHEMA}); upgrade sweepctl",
        )
    default_uid = metadata_uid(data) or default_uid
    operations = data["operations"]
    if not isinstance(operations, dict):
        raise InputError(f"{path}: operations", "expected an object keyed by op name")
    for raw_op, body in operations.items():
        configs = body.get("configurations") if isinstance(body, dict) else None
        if not isinstance(configs, list):
            raise InputError(f"{path}: operations[{raw_op!r}]", 'expected {"configurations": [...]}')
        op = canonical_op_name(raw_op)
        for index, config in enumerate(configs):
            yield _read_config(op, config, _Where(path, raw_op, index), default_uid)


class _Where:
    """A config's position for error messages, formatted only when one is raised (import reads
    100k configs per second: an f-string each is a measurable share)."""

    __slots__ = ("path", "op", "index")

    def __init__(self, path: str, op: str, index: int) -> None:
        self.path, self.op, self.index = path, op, index

    def __str__(self) -> str:
        return f"{self.path}: operations[{self.op!r}].configurations[{self.index}]"


def _read_config(op: str, config: Any, at: _Where, default_uid: str | None) -> TracedEntry:
    """One config, whatever its dialect, as one entry: a config is one argument set, whichever
    machines ran it (tt-metal keeps one config with several executions, and so do we)."""
    if isinstance(config, list):  # dialect 1
        arguments, _ = current_arguments(legacy_arguments(config, str(at)))
        return TracedEntry(op, arguments, [normalize_execution({}, default_uid)])
    if not isinstance(config, dict) or "arguments" not in config:
        raise InputError(str(at), 'unknown dialect: expected a list of arguments or an object with "arguments"')
    arguments = config["arguments"]
    stored = config.get("config_hash")
    if not isinstance(stored, str):
        stored = None
    if isinstance(arguments, list):
        arguments = legacy_arguments(arguments, f"{at}.arguments")
    elif not isinstance(arguments, dict):
        raise InputError(f"{at}.arguments", "expected an object or a list")
    if has_legacy_spelling(arguments):
        arguments, rewritten = current_arguments(arguments)
        if rewritten:
            stored = None  # it hashed the old spelling, which the store no longer holds: rehash
    if "executions" in config:  # dialect 4 (current)
        executions = config["executions"]
        if not isinstance(executions, list):
            raise InputError(f"{at}.executions", "expected a list of objects")
        runs = []
        for run in executions:
            if not isinstance(run, dict):
                raise InputError(f"{at}.executions", "expected a list of objects")
            runs.append(normalize_execution(run, default_uid))
        runs = runs or [normalize_execution({}, default_uid)]
    elif "contexts" in config:  # dialect 3
        contexts = config["contexts"]
        if not isinstance(contexts, list):
            raise InputError(f"{at}.contexts", "expected a list")
        runs = [run for ctx in contexts for run in _runs(ctx, f"{at}.contexts", default_uid)]
        stored = None  # these dialects never stored a hash
    else:  # dialect 2
        runs = _runs(config, str(at), default_uid)
        stored = None
    extras = {key: config[key] for key in CONFIG_EXTRAS if key in config}
    key = argument_key(argument_text(arguments))
    return TracedEntry(op, arguments, runs, stored, config.get("config_id"), extras, key)


def _runs(holder: Any, where: str, default_uid: str | None) -> list[dict[str, Any]]:
    if not isinstance(holder, dict):
        raise InputError(where, "expected an object with source/machine_info")
    sources = holder.get("source")
    sources = sources if isinstance(sources, list) else [sources]
    infos = holder.get("machine_info")
    infos = infos if isinstance(infos, list) else [infos]
    return [
        normalize_execution({"source": s, "machine_info": m, "count": 1}, default_uid)
        for s in sources or [None]
        for m in infos or [None]
    ]


def legacy_arguments(items: list[Any], where: str) -> dict[str, Any]:
    """Dialect-1 argument list -> argument dict; repairs UnparsedElement and unstringifies scalars."""
    arguments: dict[str, Any] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict) or len(item) != 1:
            raise InputError(f"{where}[{index}]", "expected a single-key argument object")
        ((key, value),) = item.items()
        if key == "UnparsedElement":
            text = value.get("element_info") if isinstance(value, dict) else None
            recovered = repair(text) if isinstance(text, str) else None
            if isinstance(recovered, dict) and len(recovered) == 1:
                ((key, value),) = recovered.items()
            else:
                key, value = f"arg{index}", {"UnparsedElement": value}
        arguments[key] = _legacy_scalars(value)
    return arguments


def _legacy_scalars(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text in _NULLS:
            return None
        if _NUMBER.fullmatch(text):
            return float(text) if any(c in text for c in ".eE") else int(text)
        return value
    if isinstance(value, list):
        return [_legacy_scalars(v) for v in value]
    if isinstance(value, dict) and "UnparsedElement" not in value:
        return {k: _legacy_scalars(v) for k, v in value.items()}
    return value
