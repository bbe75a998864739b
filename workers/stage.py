"""Where the executor is, so a death or a timeout blames the op only when it happened inside the op call.

HANG and CRASH count as executed and blame the op (DESIGN.md §3), but an executor can also die or
stall in sweepctl's own host work (ttnn's host `from_torch` and a few host ops SIGSEGV/SIGABRT
instead of raising; the golden; PCC) or while moving tensors to or from the device. So the executor
keeps one word of shared memory up to date: the sequence number of the vector it works on (1 for
the first frame since it started) and its stage:

  HOST       sweepctl's host work: decoding, inputs, ttnn host conversions, the golden, PCC
  DEVICE_IO  the device backend opening the mesh, moving tensors to or from the device, outside the op
  OP         inside `workers.outcome.op_call()` (the ttnn op call, its warm-up, its synchronize),
             and the test-only ops, which stand for one

The daemon reads it only after the executor is gone (killed or dead), so the word never changes
under it. `died` and `timed_out` are the one rule for what that means:

  OP                  CRASH / HANG, as ever (workers/policies/crash.py retries a CRASH once)
  HOST                ERROR, not retried: sweepctl's failure, never the op's
  DEVICE_IO           INFRA, the device set's fault: retried once, on another device set when one is live
  an older sequence   INFRA as well: the executor had not started the vector (died between vectors)

The cell carries one word the other way too, written by the daemon: `start_by`, the wall-clock
time after which the executor must not start a vector it reads from its pipe. The daemon keeps it at
the time until which every vector it sent is still safely leased (workers/policies/lease.py): a
daemon frozen past its leases (SIGSTOP, a VM pause) does not freeze its executor (its own session),
which would otherwise start the vector queued in its pipe however late, after another worker took
it over. Past `start_by` the executor answers "not started" instead (workers/executor.py).

Layout: two native-endian 8-byte words of an anonymous memfd (the daemon creates it and passes it
to each executor it spawns). At offset 0 the executor's uint64 `sequence << 8 | stage`: one aligned
8-byte store, so a death can never pair one vector's sequence with another's stage. At offset 8 the
daemon's `start_by`, a double (infinity: no deadline, e.g. for the health check). A write is a
ctypes store into the mapping, a read a load: no syscall and no pipe message per vector (a wake-up
per vector would cost the fleet its throughput). In a process that attached no cell (`sweepctl run`:
one process, nobody to tell) both words are private memory: the same cheap stores, no deadline.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import mmap
import os
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from sweeps import status

IDLE, HOST, DEVICE_IO, OP = 0, 1, 2, 3
BY_NAME = {"host": HOST, "device_io": DEVICE_IO, "op": OP}  # how a test op's `stage` kwarg names one
SIZE = 16  # the executor's word, then the daemon's start_by
_START_BY_AT = 8
EXECUTOR_GONE = "executor_gone"  # outcome key: this attempt took the executor down (the crash policy reads it)
_STAGE_BITS = 8
_STAGE_MASK = (1 << _STAGE_BITS) - 1


class Where(NamedTuple):
    """What the cell said: the executor's vector (its sequence number since it started; 0: none yet) and stage."""

    seq: int
    stage: int


class Cell:
    """The two words: in a memfd shared with the executor (`create`, `attach`), or private (no one reads them)."""

    def __init__(self, fd: int | None = None) -> None:
        self.fd = fd
        if fd is None:
            self.word, self.start_by = ctypes.c_uint64(), ctypes.c_double(math.inf)
            return
        mapping = mmap.mmap(fd, SIZE)  # from_buffer keeps the mapping alive as long as the words
        self.word = ctypes.c_uint64.from_buffer(mapping)
        self.start_by = ctypes.c_double.from_buffer(mapping, _START_BY_AT)

    @classmethod
    def create(cls) -> Cell:
        """A new shared cell (the daemon's, one per executor handle, reused across respawns), no deadline yet."""
        fd = os.memfd_create("sweepctl-stage")  # close-on-exec: only pass_fds hands it on
        os.ftruncate(fd, SIZE)
        cell = cls(fd)
        cell.set_start_by(math.inf)
        return cell

    def write(self, seq: int, stage: int) -> None:
        self.word.value = seq << _STAGE_BITS | stage

    def read(self) -> Where:
        word = self.word.value
        return Where(word >> _STAGE_BITS, word & _STAGE_MASK)

    def set_start_by(self, when: float) -> None:
        """The daemon's side: no vector may start after `when` (time.time(); infinity: no deadline)."""
        self.start_by.value = when


# --- the executor's side: its one cell, attached at start --------------------------------------
# (the words are used directly, not through Cell: this runs a few times per vector)

_private = Cell()
_word, _start_by = _private.word, _private.start_by
_seq = 0
_stage = IDLE


def attach(fd: int) -> None:
    """Write to the daemon's cell, and take its deadline, from now on (the executor, at start)."""
    global _word, _start_by
    cell = Cell(fd)
    _word, _start_by = cell.word, cell.start_by


def may_start() -> bool:
    """The daemon's deadline for starting a vector has not passed (checked as each frame is read;
    a vector refused is never begun: the cell still names the one before)."""
    return time.time() <= _start_by.value


def begin(seq: int) -> None:
    """Vector `seq` arrived: the executor works on it, in sweepctl's host work until told otherwise."""
    global _seq, _stage
    _seq, _stage = seq, HOST
    _word.value = seq << _STAGE_BITS | HOST


def mark(stage: int) -> int:
    """The current vector is now in `stage`; returns the stage it was in, for the caller to go back to."""
    global _stage
    previous, _stage = _stage, stage
    _word.value = _seq << _STAGE_BITS | stage
    return previous


@contextlib.contextmanager
def at(stage: int) -> Iterator[None]:
    """In `stage` for the block, then back to where the executor was."""
    previous = mark(stage)
    try:
        yield
    finally:
        mark(previous)


# --- the daemon's side: whose fault a death or a timeout was ----------------------------------

_VERDICT = {  # stage of the vector -> (status on a death, on a timeout, what it was doing)
    OP: (status.CRASH, status.HANG, "running the op"),
    HOST: (status.ERROR, status.ERROR,
           "building inputs / computing the golden / comparing (sweepctl's host work, outside the op)"),
    DEVICE_IO: (status.INFRA, status.INFRA, "moving tensors to or from the device (outside the op)"),
    IDLE: (status.INFRA, status.INFRA, ""),  # it had not started the vector
}  # fmt: skip


def stage_of(where: Where, head: int) -> int:
    """The stage vector `head` (its sequence number) was in; IDLE when the executor had not started it."""
    return where.stage if where.seq == head and where.stage in _VERDICT else IDLE


def died(where: Where, head: int, how: str) -> dict[str, Any]:
    """The outcome of vector `head` when the executor died (`how`: "killed by signal SIGSEGV",
    "exited with code 3") and the cell said `where`."""
    stage = stage_of(where, head)
    crash, _, doing = _VERDICT[stage]
    text = f"executor {how} while {doing}" if doing else f"executor {how} before it started this vector"
    return _outcome(crash, text)


def timed_out(where: Where, head: int, limit: float) -> dict[str, Any]:
    """The outcome of vector `head` when no result came within its `limit` s (the executor's group
    was killed) and the cell said `where`."""
    stage = stage_of(where, head)
    _, hang, doing = _VERDICT[stage]
    if stage == OP:
        text = f"no result after {limit:g} s; executor group killed"
    elif doing:
        text = f"no result after {limit:g} s, still {doing}; executor group killed"
    else:
        text = f"no result after {limit:g} s: the executor had not started this vector; executor group killed"
    return _outcome(hang, text)


def _outcome(verdict: str, message: str) -> dict[str, Any]:
    return {"status": verdict, "pcc": None, "message": message, "e2e_ms": None, EXECUTOR_GONE: True}
