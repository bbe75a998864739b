"""Test-only ops, run by the executor itself (no backend, no ttnn): present in the catalogue only
when SWEEPCTL_ENABLE_TEST_OPS=1, for benchmarks and fault-injection tests.

`noop` returns PASS at once, so a run of them measures the framework alone. The others misbehave
the ways device ops do: `hang` (forever), `hang_ignore_sigterm`, `segv` (a signal), `exit`
(`os._exit(3)`), `raise` (FAIL_OP, with kwargs `message` if given), `oom` (allocates until
refused), `sleep` (kwargs `seconds`, then PASS with the time slept as e2e).

Each stands for an op call, so the executor's stage cell says OP while it runs (workers/stage.py)
and a hang or a death in it is HANG / CRASH. Kwarg `stage` ("host", "device_io", "op") makes it
misbehave elsewhere instead: in sweepctl's host work (ERROR) or moving tensors (INFRA).

With SWEEPCTL_TEST_OP_LOG set, every test op appends "<unix time> <vector id> <worker pid>" to that
file as it starts: the fault tests count what really started, not only what was recorded.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from sweeps import status
from sweeps.catalogue import OpDef
from workers import stage

_PASS = {"status": status.PASS, "pcc": 1.0, "threshold": 1.0, "message": "", "e2e_ms": 0.0}


def run_test_op(opdef: OpDef, vector: dict[str, Any]) -> dict[str, Any]:
    name = opdef.name.rsplit(".", 1)[-1]
    started_log = os.environ.get("SWEEPCTL_TEST_OP_LOG")
    if started_log:  # one write of one line with O_APPEND: lines of concurrent executors never interleave
        fd = os.open(started_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, f"{time.time():.6f} {vector['id']} {os.getppid()}\n".encode())
        os.close(fd)
    where = stage.BY_NAME.get(vector["kwargs"].get("stage", "op"))
    if where is None:
        return {"status": status.NOT_RUN, "message": f"unknown stage {vector['kwargs']['stage']!r} of a test op"}
    with stage.at(where):
        return _run(name, opdef, vector)


def _run(name: str, opdef: OpDef, vector: dict[str, Any]) -> dict[str, Any]:
    if name == "noop":
        return _PASS
    if name == "sleep":
        start = time.perf_counter()
        time.sleep(float(vector["kwargs"].get("seconds", 1.0)))
        return {**_PASS, "e2e_ms": (time.perf_counter() - start) * 1000.0}
    if name == "hang_ignore_sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        name = "hang"
    if name == "hang":
        while True:
            time.sleep(3600)
    if name == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if name == "exit":
        os._exit(3)
    if name == "raise":
        message = vector["kwargs"].get("message", "RuntimeError: TT_FATAL raised on purpose")
        return {"status": status.FAIL_OP, "pcc": None, "message": message}
    if name == "oom":
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/statm") as statm:
            in_use = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (in_use + (256 << 20), hard))  # room for 256 MiB more
        hog = []
        try:
            while True:
                hog.append(bytearray(64 << 20))
        except MemoryError:
            return {"status": status.FAIL_OP, "pcc": None, "message": "MemoryError: host memory exhausted"}
        finally:
            hog.clear()
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    return {"status": status.NOT_RUN, "message": f"unknown test op {opdef.name}"}
