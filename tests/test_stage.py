"""The executor's stage cell (workers/stage.py) alone: a real memfd shared with a real child process
that dies in a stage, and the one rule for whose fault a death or a timeout was. Then a real
executor (emulated, test ops) through workers.executor.Executor, the daemon's handle, without Celery
or Redis: tests/test_faults.py runs the same inside real workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from sweeps import status
from sweeps.vector import make_vector, payload
from tests.conftest import ROOT
from workers import stage
from workers.executor import NOT_STARTED, Executor

CHILD = """
import os, signal, sys
from workers import stage
stage.attach(int(sys.argv[1]))
stage.begin(3)
with stage.at(stage.OP):
    pass  # back to HOST after the block
stage.begin(4)
if sys.argv[2] != "exit":
    stage.mark(getattr(stage, sys.argv[2]))
    os.kill(os.getpid(), signal.SIGSEGV)
"""


def _child_dies_in(cell: stage.Cell, where: str) -> int:
    child = subprocess.run([sys.executable, "-c", CHILD, str(cell.fd), where], cwd=ROOT, pass_fds=(cell.fd,),
                           timeout=60)  # fmt: skip
    return child.returncode


@pytest.mark.parametrize("where", ["HOST", "DEVICE_IO", "OP"])
def test_a_child_that_dies_leaves_its_vector_and_stage_in_the_cell(where):
    cell = stage.Cell.create()
    cell.write(0, stage.IDLE)
    assert cell.read() == stage.Where(0, stage.IDLE)
    assert _child_dies_in(cell, where) == -signal.SIGSEGV
    assert cell.read() == stage.Where(4, getattr(stage, where))


def test_a_block_in_a_stage_goes_back_to_where_it_was():
    cell = stage.Cell.create()
    assert _child_dies_in(cell, "exit") == 0
    assert cell.read() == stage.Where(4, stage.HOST)  # `at(OP)` ended, then the next vector began
    cell.write(2**40, stage.OP)  # a long run's sequence numbers fit beside the stage
    assert cell.read() == stage.Where(2**40, stage.OP)


def test_unattached_the_calls_are_cheap_stores_nobody_reads():
    """`sweepctl run` (one process) never attaches: every call still works and says where it was."""
    stage.begin(1)
    assert stage.mark(stage.OP) == stage.HOST
    with stage.at(stage.DEVICE_IO):
        assert stage.mark(stage.DEVICE_IO) == stage.DEVICE_IO
    assert stage.mark(stage.HOST) == stage.OP
    assert stage.may_start()  # nobody sets a deadline


def test_only_a_death_or_hang_inside_the_op_is_crash_or_hang():
    head = 7
    at = {name: stage.Where(head, value) for name, value in (("op", stage.OP), ("host", stage.HOST),
                                                              ("io", stage.DEVICE_IO))}  # fmt: skip
    behind = stage.Where(head - 1, stage.HOST)  # answered the one before, never began this one
    died = {k: stage.died(w, head, "killed by signal SIGSEGV") for k, w in {**at, "behind": behind}.items()}
    hung = {k: stage.timed_out(w, head, 30.0) for k, w in {**at, "behind": behind}.items()}
    assert {k: o["status"] for k, o in died.items()} == {"op": status.CRASH, "host": status.ERROR,
                                                         "io": status.INFRA, "behind": status.INFRA}  # fmt: skip
    assert {k: o["status"] for k, o in hung.items()} == {"op": status.HANG, "host": status.ERROR,
                                                         "io": status.INFRA, "behind": status.INFRA}  # fmt: skip
    assert died["op"]["message"] == "executor killed by signal SIGSEGV while running the op"
    assert died["host"]["message"] == ("executor killed by signal SIGSEGV while building inputs / computing the "
                                       "golden / comparing (sweepctl's host work, outside the op)")  # fmt: skip
    assert "moving tensors to or from the device (outside the op)" in died["io"]["message"]
    assert died["behind"]["message"] == "executor killed by signal SIGSEGV before it started this vector"
    assert hung["op"]["message"] == "no result after 30 s; executor group killed"
    assert hung["host"]["message"].startswith("no result after 30 s, still building inputs")
    assert "had not started this vector" in hung["behind"]["message"]
    assert all(o[stage.EXECUTOR_GONE] for o in [*died.values(), *hung.values()])
    # a word no executor writes (a torn or foreign value) blames no one: not started
    assert stage.died(stage.Where(head, 200), head, "exited with code 1")["status"] == status.INFRA


def _vector(op: str, n: int, timeout: float = 60.0, **kwargs) -> bytes:
    return payload(make_vector(f"sweepctl.test.{op}", "stage", "n300", [1, 2], [n], kwargs, timeout))


@pytest.mark.slow
def test_a_real_executor_is_blamed_by_where_it_died(monkeypatch):
    monkeypatch.setenv("SWEEPCTL_ENABLE_TEST_OPS", "1")
    executor = Executor("n300", "emulated", [])
    try:
        executor.start()
        assert executor.run(_vector("noop", 0), 60)["status"] == status.PASS
        host = executor.run(_vector("segv", 1, stage="host"), 60)
        assert host["status"] == status.ERROR and "SIGSEGV while building inputs" in host["message"]
        io = executor.run(_vector("exit", 2, stage="device_io"), 60)  # run() respawns the executor first
        assert io["status"] == status.INFRA and "exited with code 3 while moving tensors" in io["message"]
        hung = executor.run(_vector("hang", 3, timeout=1, stage="host"), 1.0)
        assert hung["status"] == status.ERROR and hung["message"].startswith("no result after 1 s, still building")
        assert executor.run(_vector("segv", 4), 60)["status"] == status.CRASH  # a test op is the op by default
        assert executor.run(_vector("noop", 5), 60)["status"] == status.PASS
        pid = executor.proc.pid
        os.killpg(pid, signal.SIGKILL)  # dies idle: the next vector never starts
        while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            time.sleep(0.01)
        behind = executor.run(_vector("noop", 6), 60)
        assert behind == stage.died(stage.Where(1, stage.HOST), 2, "killed by signal SIGKILL")
        unknown = executor.run(_vector("noop", 7, stage="nowhere"), 60)  # respawned: a new executor
        assert unknown["status"] == status.NOT_RUN and "unknown stage 'nowhere'" in unknown["message"]
    finally:
        executor.stop()


@pytest.mark.slow
def test_a_real_executor_starts_nothing_it_reads_past_its_start_by_time(monkeypatch, tmp_path):
    """The daemon's deadline in the cell: a vector queued behind a running one and read once the
    deadline passed is answered NOT_STARTED, never begun; a vector read before it runs."""
    monkeypatch.setenv("SWEEPCTL_ENABLE_TEST_OPS", "1")
    monkeypatch.setenv("SWEEPCTL_TEST_OP_LOG", str(tmp_path / "starts"))
    executor = Executor("n300", "emulated", [])
    try:
        executor.start()
        executor.cell.set_start_by(time.time() + 600)
        assert executor.send(_vector("sleep", 0, seconds=1)) and executor.send(_vector("noop", 1))
        while executor.cell.read() != stage.Where(1, stage.OP):  # the sleep started: the noop waits in the pipe
            time.sleep(0.01)
        executor.cell.set_start_by(time.time() - 1)
        assert executor.receive(60)["status"] == status.PASS
        assert executor.receive(60) == {NOT_STARTED: True}
        assert executor.cell.read() == stage.Where(1, stage.HOST)  # still the sleep's: the noop never began
        executor.cell.set_start_by(float("inf"))
        assert executor.run(_vector("noop", 1), 60)["status"] == status.PASS  # sent again: its sequence is 3
        assert executor.cell.read() == stage.Where(3, stage.HOST)
        started = [line.split()[1] for line in (tmp_path / "starts").read_text().splitlines()]
        assert len(started) == 2 and started[0] != started[1]  # the sleep, then the noop once
    finally:
        executor.stop()
