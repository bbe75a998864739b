"""Traced machine info, normalised: one spelling per device series, mesh shapes as int lists."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

from tracer.cppjson import parse_int_list
from tracer.jsonio import memoized


def normalize_series(series: Any) -> Any:
    """`tt_galaxy_wh` / `TT-Galaxy-WH` -> `tt-galaxy-wh`; tt-smi's `n300 L` / `n300 R` -> `n300`."""
    if isinstance(series, list):
        series = series[0] if series else None
    if not isinstance(series, str):
        return series
    text = re.sub(r"\s+[LR]$", "", series.strip()).lower()
    return text.replace("_", "-")


def _as_int(value: Any) -> Any:
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    return value


def normalize_machine_info(info: Any) -> dict[str, Any] | None:
    """One spelling per field. A store repeats a few machine infos thousands of times: each distinct
    one is normalised once and the result shared, so callers treat it as read-only."""
    if not isinstance(info, dict) or not info:
        return None
    return _normalized(info)


def _normalize(info: dict[str, Any]) -> dict[str, Any]:
    out = dict(info)
    if "device_series" in out:
        out["device_series"] = normalize_series(out["device_series"])
    for key in ("card_count", "device_count"):
        if key in out:
            out[key] = _as_int(out[key])
    for key in ("mesh_device_shape", "device_ids"):
        if key in out:
            parsed = parse_int_list(out[key])
            if parsed is not None:
                out[key] = list(parsed)
    return out


def hardware_key(info: dict[str, Any] | None) -> list[Any] | None:
    """tt-metal's hardware identity: (board_type, device_series, card_count)."""
    if not info or not info.get("board_type"):
        return None
    return [info.get("board_type"), info.get("device_series"), info.get("card_count", 1)]


HARDWARE_FIELDS = ("board_type", "card_count", "device_count", "device_series", "mesh_device_shape")  # sorted


def hardware_summary(info: dict[str, Any] | None) -> dict[str, Any] | None:
    """The fields of a traced machine that say what hardware it was (no device ids): what a vector
    carries as its traced machine and tt-metal's exports format as a card type."""
    if not info:
        return None
    summary = {key: info[key] for key in HARDWARE_FIELDS if info.get(key) is not None}
    return summary or None


def machine_label(info: dict[str, Any] | None) -> str:
    if not info:
        return "unknown"
    series = info.get("device_series") or info.get("board_type") or "unknown"
    cards = info.get("card_count", 1)
    mesh = info.get("mesh_device_shape")
    label = f"{series} x{cards}" if cards and cards != 1 else str(series)
    return f"{label} mesh {mesh[0]}x{mesh[1]}" if isinstance(mesh, list) and len(mesh) == 2 else label


def _table_rows(lines: list[str]) -> list[list[str]]:
    """Data rows of one of tt-smi's box-drawn tables: `│ 1 │ Wormhole │ n300 L │ 0100... │`."""
    rows = []
    for line in lines:
        text = line.replace("│", "|").strip()
        if not text.startswith("|"):
            continue
        cells = [cell.strip() for cell in text.strip("|").split("|")]
        if len(cells) >= 3 and cells[1] and cells[1] != "Board Type":
            rows.append(cells)
    return rows


def parse_tt_smi_list(text: str) -> dict[str, Any] | None:
    """Machine info from `tt-smi -ls`: "All available boards" gives device_count and the series,
    "Boards that can be reset" gives card_count (local boards; remote `R` chips are not listed)."""
    lines = text.splitlines()
    marks = [i for i, line in enumerate(lines) if "Boards that can be reset" in line]
    split = marks[0] if marks else len(lines)
    available = _table_rows(lines[:split])
    resettable = _table_rows(lines[split:])
    if not available:
        return None
    return normalize_machine_info(
        {
            "board_type": available[0][1],
            "device_series": available[0][2],
            "card_count": len(resettable) or len(available),
            "device_count": len(available),
        }
    )


def detect_machine_info(timeout: float = 30.0) -> dict[str, Any] | None:
    """Ask `tt-smi -ls` when it is installed; None on a host without Tenstorrent tools."""
    if shutil.which("tt-smi") is None:
        return None
    try:
        proc = subprocess.run(["tt-smi", "-ls"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_tt_smi_list(proc.stdout) if proc.returncode == 0 else None


_normalized = memoized(_normalize, 1 << 12)
