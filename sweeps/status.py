"""Result statuses: the one home of what each verdict means and whether it counts as executed.

Pass rate = PASS / executed, so infrastructure faults and configs that never ran cannot drag it
down (tt-metal books both as op failures).
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
NOT_RUN = "NOT_RUN"
EXPIRED = "EXPIRED"
CANCELED = "CANCELED"

EXECUTED = frozenset({PASS, FAIL_ACCURACY, FAIL_OP, FAIL_L1_OOM, HANG, CRASH})
FAILED = EXECUTED - {PASS}
ALL = (PASS, FAIL_ACCURACY, FAIL_OP, FAIL_L1_OOM, HANG, CRASH, INVALID, INFRA, NOT_RUN, EXPIRED, CANCELED)
MEANING = {
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
}


def is_executed(status: str) -> bool:
    return status in EXECUTED
