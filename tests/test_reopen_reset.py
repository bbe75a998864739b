"""An executor found dead between vectors is reset and health-checked before it opens again (issue 16
item 10): a wedged board otherwise fails every plain reopen. Real redis-server and worker (the
fault tests' cluster), the executor killed from outside while idle."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from sweeps import status
from tests.conftest import executors_of
from tests.test_faults import cluster, vector  # noqa: F401 - the cluster fixture


def _gone(pid: int) -> bool:
    """Dead and reapable: a zombie with no thread still exiting (waitpid sees it only then)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state == "Z" and len(os.listdir(f"/proc/{pid}/task")) <= 1
    except OSError:
        return True


def test_an_executor_that_died_idle_is_reset_and_checked_before_it_reopens(cluster):  # noqa: F811
    worker = cluster.worker("w-idle")
    first = [vector("noop", 0)]
    cluster.enqueue("before", first)
    cluster.wait(lambda: len(cluster.finals("before")) == 1, 60, "the first run did not finish")
    [executor] = executors_of(worker)
    os.killpg(executor, signal.SIGKILL)  # dies with nothing in flight
    cluster.wait(lambda: _gone(executor), 30, "the killed executor did not exit")
    second = [vector("noop", 1)]
    cluster.enqueue("after", second)
    cluster.wait(lambda: len(cluster.finals("after")) == 1, 120, "the second run did not finish")
    assert cluster.finals("after")[second[0]["id"]] == status.PASS
    attempts = [r["status"] for r in cluster.records("after")[second[0]["id"]]]
    assert attempts == [status.PASS]  # no CRASH: it was never sent to the dead executor
    assert cluster.resets() == ["w-idle"]  # reset before the reopen, none for the first open
    assert cluster.health("w-idle") == "GOOD"
