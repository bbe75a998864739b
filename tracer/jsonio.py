"""Fast JSON for whole stores (orjson), with the standard library as the fallback and the judge
of errors, so a malformed file is reported with the standard line:column. config_hash never
uses this module: its bytes must be the standard library's `json.dumps(sort_keys=True)`.

Special floats are read as the strings tt-metal stores them as ("inf", "-inf", "nan": its
tracer rewrites `-Infinity` literals to `"-inf"`), so a store holds one spelling and orjson, which
writes a NaN as null, never sees a float it would lose."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import orjson

_CONSTANTS = {"Infinity": "inf", "-Infinity": "-inf", "NaN": "nan"}


def loads(data: bytes | memoryview, special_floats: bool = False) -> Any:
    """`special_floats`: NaN/Infinity literals as floats (a trace file, to hash them as tt-metal
    does) instead of tt-metal's stored strings. `data` may be a mapped file's memoryview."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        data = bytes(data)
        # NaN/Infinity literals, >64-bit ints; raises the standard error otherwise
        return json.loads(data) if special_floats else json.loads(data, parse_constant=_CONSTANTS.__getitem__)


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # ints beyond 64 bits
        return json.dumps(value, ensure_ascii=False).encode()


def memoized(convert: Callable[[Any], Any], limit: int) -> Callable[[Any], Any]:
    """Traced stores repeat the same tensors, memory configs, placements and machine infos thousands
    of times: convert each distinct raw dict once (keyed by its JSON, at most `limit` kept). Results
    are shared, so callers treat them as read-only."""
    cache: dict[bytes, Any] = {}

    @functools.wraps(convert)
    def wrapper(raw: Any) -> Any:
        if not isinstance(raw, dict):
            return convert(raw)
        try:
            key = orjson.dumps(raw)
        except TypeError:
            return convert(raw)
        found = cache.get(key)
        if found is None:
            if len(cache) >= limit:
                cache.clear()
            found = cache[key] = convert(raw)
        return found

    return wrapper
