"""The op's device kernel time from tt-metal's device profiler, for the record beside e2e.

How tt-metal's sweep runner reads it (tenstorrent/tt-metal
tests/sweep_framework/sweep_utils/perf_utils.py, `gather_single_test_perf`, at 0638b5f1): only when
TT_METAL_DEVICE_PROFILER=1, `ttnn.ReadDeviceProfiler(device)` after the op, then
`ttnn._ttnn.profiler.get_latest_programs_perf_data()`: {chip id: [ProgramAnalysisData]}, each with
`program_analyses_results` ({"DEVICE KERNEL DURATION [ns]": result with `.duration`, ...}) and
`core_count`. ttnn 0.81.1 has both; its profiler data is empty unless TT_METAL_DEVICE_PROFILER=1,
TT_METAL_PROFILER_MID_RUN_DUMP=1 and TT_METAL_PROFILER_CPP_POST_PROCESS=1 are set for the worker
and ttnn is a profiler build. Without data the record has no `device_perf` at all: never zeros
(tt-metal's runner once filled in a dummy dict of zeros).

The device backend reads the profiler once after the warm-up (draining it, so input transfers
and the warm-up are not counted) and once after the timed run.
"""

from __future__ import annotations

import os
from typing import Any

# tt-metal's DEVICE_PERF_KEYS (perf_utils.py): the figures its results keep
KEYS = (
    "DEVICE FW DURATION [ns]",
    "DEVICE KERNEL DURATION [ns]",
    "DEVICE BRISC KERNEL DURATION [ns]",
    "DEVICE NCRISC KERNEL DURATION [ns]",
    "DEVICE TRISC0 KERNEL DURATION [ns]",
    "DEVICE TRISC1 KERNEL DURATION [ns]",
    "DEVICE TRISC2 KERNEL DURATION [ns]",
)
CORE_COUNT = "CORE COUNT"


def enabled() -> bool:
    """The worker was started with the device profiler on (tt-metal's runner's own test)."""
    return os.environ.get("TT_METAL_DEVICE_PROFILER") == "1"


def drain(ttnn: Any, mesh: Any) -> None:
    """Read (and drop) what the profiler holds: what ran before the timed op is not its time."""
    if enabled():
        ttnn.ReadDeviceProfiler(mesh)


def measured(ttnn: Any, mesh: Any) -> dict[str, Any]:
    """{"device_perf": {...}} for the programs run since the last read, or {} when the profiler
    is off or gave nothing."""
    if not enabled():
        return {}
    ttnn.ReadDeviceProfiler(mesh)
    from ttnn._ttnn import profiler

    figures = summarize(profiler.get_latest_programs_perf_data())
    return {"device_perf": figures} if figures else {}


def summarize(perf_by_chip: dict[Any, list[Any]]) -> dict[str, int]:
    """tt-metal's figures for one op from the profiler's per-chip programs: per chip, each duration
    summed over the op's programs (an op that runs several programs takes their sum), then the
    slowest chip's (a mesh op ends when its last chip does); CORE COUNT the largest program's.
    {} when there is no data."""
    figures: dict[str, int] = {}
    cores = 0
    for programs in perf_by_chip.values():
        chip: dict[str, int] = {}
        for program in programs:
            cores = max(cores, int(program.core_count or 0))
            for name, result in program.program_analyses_results.items():
                if name in KEYS:
                    chip[name] = chip.get(name, 0) + int(result.duration)
        for name, duration in chip.items():
            figures[name] = max(figures.get(name, 0), duration)
    if figures:
        figures[CORE_COUNT] = cores
    return figures
