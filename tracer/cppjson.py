"""Recovery of the C++-style fragments tt-metal's graph tracer wrote into master JSON.

The C++ dump is almost JSON. The known deviations are core ranges written as
`{"x":0,"y":0} - {"x":7,"y":7}`, brace lists such as `{32, 32}` outside quotes, and bare
`nullopt` / `std::nullopt`. We repair exactly those and give up (return None) otherwise, so
the caller keeps the text verbatim and flags it instead of guessing.
"""

from __future__ import annotations

import json
import re
from typing import Any

_COORD = r"\{\s*\"x\"\s*:\s*-?\d+\s*,\s*\"y\"\s*:\s*-?\d+\s*\}"
_RANGE = re.compile(rf"({_COORD})\s*-\s*({_COORD})")
_BRACE_LIST = re.compile(r"(?<=[:\[,])\s*\{(\s*-?\d+(?:\s*,\s*-?\d+)*\s*)\}")
_BARE_NULL = re.compile(r"(?<=[:\[,])\s*(?:std::)?nullopt\b")
_INTS = re.compile(r"-?\d+")


def repair(text: str) -> Any | None:
    """Parse a C++-style JSON fragment; None when it cannot be repaired with the known rules."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        pass
    fixed = _RANGE.sub(r'{"start": \1, "end": \2}', text)
    fixed = _BRACE_LIST.sub(r" [\1]", fixed)
    fixed = _BARE_NULL.sub(" null", fixed)
    try:
        return json.loads(fixed)
    except (json.JSONDecodeError, RecursionError):
        return None


def parse_int_list(value: Any) -> list[int] | None:
    """`[4, 8]`, `"[4, 8]"`, `"{32, 32}"` and `(1, 2)` strings -> [ints]; None when not a list of ints."""
    if isinstance(value, (list, tuple)):
        for item in value:
            if type(item) is not int:  # noqa: E721 - bools are not dimensions
                return None
        return value if isinstance(value, list) else list(value)
    if isinstance(value, str):
        text = value.strip()
        if len(text) >= 2 and text[0] in "[{(" and text[-1] in "]})":
            inner = text[1:-1].strip()
            if not inner:
                return []
            parts = [p.strip() for p in inner.split(",")]
            if all(_INTS.fullmatch(p) for p in parts):
                return [int(p) for p in parts]
    return None
