"""Each worker policy alone (workers/policies/): no worker or executor process; a real redis-server
where the policy writes to Redis. tests/test_faults*.py run the same policies inside real workers."""

from __future__ import annotations

import time

import pytest
import redis

from broker.keys import Keys
from broker.results import DEAD, RUN, Claim
from sweeps import status
from workers import recovery, stage
from workers.policies import crash, expiry, lost, shutdown
from workers.policies.cancel import Cancel
from workers.policies.lease import Leases, Stamp
from workers.policies.quarantine import Health, Quarantined


def test_expiry_is_due_only_for_a_run_whose_expiry_has_passed():
    now = time.time()
    assert not expiry.due(None, now)  # enqueued without --expires
    assert not expiry.due(str(now + 60).encode(), now)
    assert expiry.due(str(now - 1).encode(), now) and expiry.due(repr(now - 1), now)


def test_a_lost_attempt_is_booked_infra_not_final_and_a_dead_claim_final_infra():
    fresh = Claim("v", RUN, 1, False, b"p", "w/1")
    assert lost.lost_attempt(fresh) is None
    attempt, outcome = lost.lost_attempt(Claim("v", RUN, 2, True, b"p", "w/1"))
    assert attempt == 1 and outcome["status"] == status.INFRA and "attempt 1: its worker died" in outcome["message"]
    attempt, outcome = lost.dead(Claim("v", DEAD, lost.MAX_LOST_ATTEMPTS, True, b"p", ""))
    assert attempt == lost.MAX_LOST_ATTEMPTS and outcome["status"] == status.INFRA
    assert "not run again" in outcome["message"]


def test_a_crash_is_retried_once_and_a_chunk_handed_back_only_while_another_worker_can_take_it():
    crashed = {"status": status.CRASH, "message": "executor died"}
    assert crash.retries(crashed, crashed_before=False) and not crash.retries(crashed, crashed_before=True)
    assert not crash.retries({"status": status.HANG}, crashed_before=False)
    gone = stage.died(stage.Where(3, stage.DEVICE_IO), 3, "killed by signal SIGBUS")  # the device's, outside the op
    assert crash.retries(gone, crashed_before=False) and not crash.retries(gone, crashed_before=True)
    assert not crash.retries(stage.died(stage.Where(3, stage.HOST), 3, "killed by signal SIGSEGV"), False)  # ERROR
    assert not crash.retries({"status": status.INFRA, "message": "could not open the mesh"}, False)  # executor's own
    asked: list[str] = []

    def another() -> bool:
        asked.append("redis")
        return True

    assert crash.hands_back("w1", ["w1"], 0, another) and asked == ["redis"]
    assert not crash.hands_back("w1", ["w1"], crash.MAX_HANDBACKS, another)
    assert not crash.hands_back("w2", ["w1"], 0, another) and asked == ["redis"]  # Redis asked only when needed
    assert not crash.hands_back("w1", ["w1"], 0, lambda: False)


def test_cancel_kills_the_running_vector_once_and_books_it_canceled():
    cancel = Cancel()
    cancel.start_chunk()
    assert not cancel.stops("r")
    assert cancel.kill(("r", "v1")) and not cancel.kill(("r", "v1"))  # the heartbeat and the chunk's thread
    passed = {"status": status.PASS}
    assert cancel.outcome("r", "v2", passed) is passed and not cancel.stops("r")  # not the killed vector
    assert cancel.outcome("r", "v1", passed)["status"] == status.CANCELED and cancel.stops("r")
    cancel.killed()
    assert cancel.kill(("r", "v3"))  # a later kill is possible again
    cancel.start_chunk()
    assert not cancel.stops("r")
    cancel.seen("r")  # a claim found the run canceled
    assert cancel.stops("r") and not cancel.stops("other")


def test_a_warm_shutdown_feeds_nothing_more_and_hands_the_rest_back():
    stop = shutdown.WarmShutdown()
    assert stop.ahead() == shutdown.AHEAD and stop.deadline == float("inf")
    stop.hand_back("w1")  # not stopping: the chunk goes on
    stop.begin()
    deadline = stop.deadline
    assert stop.stopping and stop.ahead() == 0 and deadline <= time.monotonic() + shutdown.STOP_FLUSH
    stop.begin()  # a second SIGTERM does not move the deadline
    assert stop.deadline == deadline
    with pytest.raises(shutdown.GivenBack, match="warm shutdown of w1"):
        stop.hand_back("w1")


def test_a_failed_recovery_quarantines_and_the_health_is_in_the_workers_row(redis_server):
    client, keys = redis.Redis.from_url(redis_server), Keys("policies")
    health = Health(client, keys, "w1")
    health.set(recovery.UNKNOWN, "CRASH on ttnn.add")
    health.settle(recovery.RecoveryResult(recovery.GOOD, "reset and health check passed"))
    assert health.state == recovery.GOOD
    assert client.hget(keys.worker("w1"), "health") == b"GOOD"
    with pytest.raises(Quarantined, match="health check FAIL_OP"):
        health.settle(recovery.RecoveryResult(recovery.BAD, "health check FAIL_OP: boom"))
    row = client.hgetall(keys.worker("w1"))
    assert health.state == recovery.BAD and row[b"health"] == b"BAD" and row[b"health_reason"].startswith(b"health")


def test_a_lease_is_sent_on_while_it_and_the_heartbeat_are_fresh_and_confirmed_again_after():
    leases, t0 = Leases(30, 20), Stamp(1000.0, 50.0)
    assert (leases.fresh_for, leases.beat_fresh_for) == (15, 10)
    leases.take("k1", "w/1", t0)
    leases.take("k2", "w/2", t0)
    assert leases.stale("k1", t0)  # no heartbeat landed yet: a live worker may take this one for lost
    leases.beaten(t0)
    assert not leases.stale("k1", Stamp(1009.0, 59.0)) and leases.stale("k1", Stamp(1011.0, 61.0))  # the heartbeat
    leases.beaten(Stamp(1010.0, 60.0))
    leases.beaten(Stamp(1005.0, 55.0))  # a heartbeat answering late moves nothing back
    assert not leases.stale("k1", Stamp(1014.0, 64.0)) and leases.stale("k1", Stamp(1016.0, 66.0))  # the lease
    assert leases.stale("k1", Stamp(1016.0, 51.0))  # a VM pause: the wall clock moved, the monotonic one did not
    assert leases.stale("k1", Stamp(990.0, 66.0))  # the wall clock stepped back: the monotonic one still counts
    assert leases.stale("unknown", t0) and leases.lost("unknown") and not leases.lost("k1")
    renew = leases.held()
    assert sorted(renew) == [("k1", "w/1"), ("k2", "w/2")]
    leases.take("k2", "w/3", Stamp(1015.0, 65.0))  # claimed again while the renew was on its way
    leases.beaten(Stamp(1020.0, 70.0))
    leases.renewed(renew, ["k1", "k2"], Stamp(1020.0, 70.0))  # k1 taken over; k2's answer is for its old value
    assert leases.lost("k1") and leases.stale("k1", Stamp(1020.0, 70.0))
    assert not leases.lost("k2") and not leases.stale("k2", Stamp(1020.0, 70.0))
    leases.renewed([("k1", "w/1")], [], Stamp(1021.0, 71.0))  # a slower renew that found it held: lost stays lost
    assert leases.lost("k1")
    leases.renewed([("k2", "w/3")], [], Stamp(1028.0, 78.0))
    leases.renewed([("k2", "w/3")], [], Stamp(1025.0, 75.0))  # an older renew answering late moves nothing back
    leases.beaten(Stamp(1040.0, 90.0))
    assert not leases.stale("k2", Stamp(1042.0, 92.0)) and leases.stale("k2", Stamp(1044.0, 94.0))
    leases.forget("k2")
    leases.forget("k2")
    assert leases.held() == [("k1", "w/1")] and leases.lost("k2")


def test_the_executor_may_start_its_vectors_until_the_first_of_their_leases_stops_being_fresh():
    """The start-by time the worker tells its executor (workers/stage.py) is the `stale` rule's, on
    the wall clock, over the vectors in the executor only."""
    told: list[float] = []
    leases = Leases(30, 20, told.append)
    leases.executing([])
    assert told[-1] == float("inf")  # nothing leased in the executor (a health check): no deadline
    leases.take("k1", "w/1", Stamp(1000.0, 50.0))
    leases.take("k2", "w/2", Stamp(1004.0, 54.0))
    leases.take("k3", "w/3", Stamp(990.0, 40.0))  # claimed, not sent: not the executor's
    leases.executing(["k1", "k2"])
    assert told[-1] == float("-inf")  # no heartbeat landed yet
    leases.beaten(Stamp(1002.0, 52.0))
    assert told[-1] == 1012.0  # half of lost_after after the heartbeat
    leases.beaten(Stamp(1008.0, 58.0))
    assert told[-1] == 1015.0  # half the TTL after k1 was claimed
    assert not leases.stale("k1", Stamp(1015.0, 65.0)) and leases.stale("k1", Stamp(1015.5, 55.0))
    leases.forget("k1")  # booked: it ran, whatever the executor reads next
    leases.executing(["k1", "k2"])
    assert told[-1] == 1018.0
    leases.renewed([("k2", "w/2")], [], Stamp(1009.0, 59.0))
    leases.beaten(Stamp(1012.0, 62.0))
    assert told[-1] == 1022.0
    leases.renewed([("k2", "w/2")], ["k2"], Stamp(1013.0, 63.0))  # taken over: the executor starts nothing
    assert told[-1] == float("-inf")
    leases.executing([])
    assert told[-1] == float("inf")
