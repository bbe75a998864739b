"""Traced machine info, normalised: one spelling per device series, mesh shapes as int lists."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

from tracer.cppjson import parse_int_list


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
    if not isinstance(info, dict) or not info:
        return None
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
                out[key] = parsed
    return out


def hardware_key(info: dict[str, Any] | None) -> list[Any] | None:
    """tt-metal's hardware identity: (board_type, device_series, card_count)."""
    if not info or not info.get("board_type"):
        return None
    return [info.get("board_type"), info.get("device_series"), info.get("card_count", 1)]


def machine_label(info: dict[str, Any] | None) -> str:
    if not info:
        return "unknown"
    series = info.get("device_series") or info.get("board_type") or "unknown"
    cards = info.get("card_count", 1)
    mesh = info.get("mesh_device_shape")
    label = f"{series} x{cards}" if cards and cards != 1 else str(series)
    return f"{label} mesh {mesh[0]}x{mesh[1]}" if isinstance(mesh, list) and len(mesh) == 2 else label


_BOARD_ROW = re.compile(r"^\s*\|?\s*\d+\s*\|\s*(Wormhole|Blackhole|Grayskull)\s*\|\s*([A-Za-z0-9_\- ]+?)\s*\|", re.I)


def parse_tt_smi_list(text: str) -> dict[str, Any] | None:
    """Machine info from `tt-smi -ls`: the "All available boards" table gives device_count and series,
    "Boards that can be reset" gives card_count (tt-metal's tracer reads it the same way)."""
    sections = re.split(r"(?im)^.*(?=All available boards|Boards that can be reset)", text)
    available = next((s for s in sections if s.lstrip().lower().startswith("all available boards")), "")
    resettable = next((s for s in sections if s.lstrip().lower().startswith("boards that can be reset")), "")
    rows = [m for m in (_BOARD_ROW.match(line) for line in available.splitlines()) if m]
    if not rows:
        return None
    reset_rows = [m for m in (_BOARD_ROW.match(line) for line in resettable.splitlines()) if m]
    return normalize_machine_info(
        {
            "board_type": rows[0].group(1).capitalize(),
            "device_series": rows[0].group(2),
            "card_count": len(reset_rows) or len(rows),
            "device_count": len(rows),
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
