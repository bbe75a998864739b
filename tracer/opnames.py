"""Canonical op names are dotted: `ttnn::pad`, `pad` and `ttnn.pad` all name `ttnn.pad`."""

from __future__ import annotations


def canonical_op_name(name: str) -> str:
    dotted = name.strip().replace("::", ".").strip(".")
    if not dotted.startswith("ttnn."):
        dotted = "ttnn." + dotted
    return dotted


def short_op_name(name: str) -> str:
    """`ttnn.experimental.all_gather_async` -> `all_gather_async` (for display and module names)."""
    return canonical_op_name(name).rsplit(".", 1)[-1]
