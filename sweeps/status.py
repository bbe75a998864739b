"""Result statuses: the one home of what each verdict means and whether it counts as executed.

Pass rate = PASS / executed, so infrastructure faults, configs that never ran and sweepctl's own
failures cannot drag it down (tt-metal books them all as op failures).

ERROR is sweepctl's own failure, never the op's: anything that goes wrong outside the op call
(reading an argument, building inputs, the golden, comparing). It is not executed, never a FAIL_*,
listed first by every reader, and a run with any ERROR fails its report.
A REUSED vector was not executed in this run (its verdict is another run's PASS), so it counts in
neither executed nor the pass rate: reports count it apart.
"""

from __future__ import annotations

PASS = "PASS"
FAIL_ACCURACY = "FAIL_ACCURACY"
FAIL_OP = "FAIL_OP"
FAIL_L1_OOM = "FAIL_L1_OOM"
HANG = "HANG"
CRASH = "CRASH"
INVALID = "INVALID"
INFRA = "INFRA"
ERROR = "ERROR"
NOT_RUN = "NOT_RUN"
EXPIRED = "EXPIRED"
CANCELED = "CANCELED"
REUSED = "REUSED"

EXECUTED = frozenset({PASS, FAIL_ACCURACY, FAIL_OP, FAIL_L1_OOM, HANG, CRASH})
FAILED = EXECUTED - {PASS}
LISTED = FAILED | {ERROR}  # final statuses whose records a run keeps to read one by one (its failed hash)
ALL = (ERROR, PASS, FAIL_ACCURACY, FAIL_OP, FAIL_L1_OOM, HANG, CRASH, INVALID, INFRA, NOT_RUN, EXPIRED, CANCELED,
       REUSED)
MEANING = {
    ERROR: "sweepctl's own failure: reading an argument, building inputs, the golden, comparing; not the op's",
    PASS: "ran; PCC at or above threshold",
    FAIL_ACCURACY: "ran; PCC below threshold",
    FAIL_OP: "the op raised (TT_FATAL, unsupported)",
    FAIL_L1_OOM: "the op could not allocate",
    HANG: "timed out inside the op",
    CRASH: "the executor died inside the op (signal, abort)",
    INVALID: "the config fails host validation; never sent to a device",
    INFRA: "device open, reset, broker or worker failure outside the op",
    NOT_RUN: "never ran (no sweep definition, unreadable argument)",
    EXPIRED: "never ran: the run expired first",
    CANCELED: "never ran: the run was cancelled",
    REUSED: "not run here: it passed in the `--reuse` base run on the same backend, ttnn version and machine",
}


def is_executed(status: str) -> bool:
    return status in EXECUTED


# Outcomes of a trace job (`sweepctl trace --model/--all`): the model test as a whole, not an op.
TRACE_PASSED = "passed"  # every test of the entry passed: its configs are merged
TRACE_FAILED = "failed"  # a test failed or none passed (only passed tests' configs are ever merged)
TRACE_TIMEOUT = "timeout"  # past the entry's timeout: the test's process group was killed, the devices reset
TRACE_INFRA = "infra"  # the worker could not run it (test missing on the host, worker lost twice)
TRACE_OUTCOMES = (TRACE_PASSED, TRACE_FAILED, TRACE_TIMEOUT, TRACE_INFRA)
