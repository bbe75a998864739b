"""One vector in this process, for `sweepctl run`: no Celery, no executor process, so `python -m
pdb` and breakpoints reach the backend, the adapters and the golden.

The process is set up the way the worker daemon sets up its executor, with the executor's own
code (workers/executor.py): the environment `Executor.env` gives it (the machine's mock cluster
descriptor when emulated, the device set on ttnn), a working directory of its own for the files
ttnn writes when it opens a mesh, ttnn's output kept off stdout; the vector goes through
`run_vector`, the executor's own step. Nothing bounds its time (a debugger may stop it) and nothing
is written to Redis: the record a worker would write is returned to be printed.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any, BinaryIO

from broker.results import make_record
from sweeps import status
from sweeps.profiles import get_profile
from sweeps.validate import ttnn_reason
from workers.executor import Executor, enter_workdir, isolate_stdout, open_backend, run_vector
from workers.outcome import raise_if_debugger_quit


def prepare(machine: str, backend: str) -> BinaryIO:
    """Set this process up as an executor of `machine` on `backend` (before ttnn is imported);
    returns the stream that carries the command's own output (fd 1 then goes to stderr)."""
    global _OUT
    env = Executor(machine, backend, devices_of(machine, backend)).env()
    if "ttnn" in sys.modules and any(os.environ.get(k) != env.get(k) for k in _CHOSEN_AT_IMPORT):
        raise RuntimeError("ttnn is imported already with another cluster: run one vector per process")
    os.environ.update(env)
    enter_workdir(os.getpid())
    if _OUT is None:  # a second run in this process (pdb's restart) keeps writing to the real stdout
        _OUT = isolate_stdout()
    return _OUT


_CHOSEN_AT_IMPORT = ("TT_METAL_MOCK_CLUSTER_DESC_PATH", "TT_VISIBLE_DEVICES")
_OUT: BinaryIO | None = None


def devices_of(machine: str, backend: str) -> list[int]:
    """The devices `sweepctl worker` owns by default: every PCIe device of the machine."""
    return list(range(get_profile(machine).pcie_devices)) if backend == "ttnn" else []


def run_here(vector: dict[str, Any], backend: str, run_id: str | None) -> dict[str, Any]:
    """Open the backend and run the vector; the record a worker would write. A backend that cannot
    open is INFRA, as the daemon books it, with the reason: the device could not be opened. Quitting
    a debugger raises bdb.BdbQuit out of here: there is no record."""
    import importlib.metadata

    machine = vector["machine"]
    start = time.time()
    try:
        opened = open_backend(machine, backend)
    except Exception as exc:
        raise_if_debugger_quit(exc)
        outcome = {
            "status": status.INFRA,
            "message": f"backend {backend} could not open the device: {type(exc).__name__}: {ttnn_reason(exc)}",
        }
    else:
        outcome = run_vector(opened, vector)
        getattr(opened, "close", lambda: None)()
    return make_record(
        vector, run_id or "", 0, outcome,
        backend=backend, worker=f"sweepctl-run-{os.getpid()}@{socket.gethostname()}", host=socket.gethostname(),
        devices=devices_of(machine, backend), ttnn_version=importlib.metadata.version("ttnn"), start=start,
        end=time.time(),
    )  # fmt: skip
