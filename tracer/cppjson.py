"""Recovery of the C++-style fragments tt-metal's graph tracer wrote into master JSON.

The C++ dump is almost JSON. The known deviations are core ranges written as
`{"x":0,"y":0} - {"x":7,"y":7}`, sets of ranges in braces (`{[..], [..]}`, a multi-range grid),
brace lists such as `{32, 32}` outside quotes, and bare `nullopt` / `std::nullopt`. We repair
exactly those and give up (return None) otherwise, so the caller keeps the text verbatim and
flags it instead of guessing.

Values the dump wrote as text (`"[[0, 0], [0, 13]]"`, `"{32, 16, 3, 3}"`, `"(1, 2)"`) are read by
`parse_number_list`: nested lists of numbers, nothing else.
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
    fixed = _brace_sets(fixed)
    fixed = _BRACE_LIST.sub(r" [\1]", fixed)
    fixed = _BARE_NULL.sub(" null", fixed)
    try:
        return json.loads(fixed)
    except (json.JSONDecodeError, RecursionError):
        return None


def _brace_sets(text: str) -> str:
    """`{[a], [b]}` (a C++ set of ranges) -> `[[a], [b]]`: a brace whose first non-blank character
    is `[` opens a list, and its matching brace closes it. Text inside strings is left alone."""
    out = list(text)
    stack: list[bool] = []  # per open brace: is it a set?
    in_string = escaped = False
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char == "{":
            is_set = text[i + 1 :].lstrip().startswith("[")
            stack.append(is_set)
            if is_set:
                out[i] = "["
        elif char == "}" and stack and stack.pop():
            out[i] = "]"
    return "".join(out)


def parse_number_list(text: str) -> list[Any] | None:
    """`"[[0, 0], [0, 13]]"`, `"{{0, 0}, {0, 32}}"`, `"[1, 32]"`, `"(2, 2)"` -> nested lists of ints or
    floats; None for any other text (a string argument stays a string)."""
    text = text.strip()
    if len(text) < 2 or text[0] not in "[{(" or text[-1] not in "]})":
        return None
    try:
        value = json.loads(text.translate(_TO_BRACKETS))
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if _numbers_only(value) else None


_TO_BRACKETS = str.maketrans("{(})", "[[]]")


def _numbers_only(value: Any) -> bool:
    if isinstance(value, list):
        return all(_numbers_only(item) for item in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
