"""Fast JSON for whole stores (orjson), with the standard library as the fallback and the judge
of errors, so a malformed file is reported with the standard line:column. config_hash never
uses this module: its bytes must be the standard library's `json.dumps(sort_keys=True)`."""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # NaN literals, >64-bit ints; raises the standard error otherwise


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # ints beyond 64 bits
        return json.dumps(value, ensure_ascii=False).encode()
