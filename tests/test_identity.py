"""Workers and the embedded Redis have one identity each, with real processes at the defaults:
a live worker's name is never given to a second worker (atomically), a worker that lost its name
never stops the one that took it over, `sweepctl up` replaces what died under free names and
restarts a killed Redis on its own port and data dir, and `sweepctl down` stops every process
`up` started (verified by pid and start time), counted in /proc afterwards."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from broker import embedded, registry
from broker.app import make_app
from broker.cli import main
from broker.coordinator import Plan, publish
from broker.keys import Keys
from broker.results import decode_record
from sweeps.suites import Expansion, Selection
from sweeps.vector import make_vector
from tests.conftest import ROOT, redis_process, start_worker, wait_for_redis

pytestmark = pytest.mark.slow
HOST = socket.gethostname()


def _noops(tag: str, count: int) -> list[dict]:
    return [make_vector("sweepctl.test.noop", tag, "n300", [1, 2], [n], {}, 30.0) for n in range(count)]


def _run(url: str, keys: Keys, run_id: str, vectors: list[dict], timeout: float = 120.0) -> list[dict]:
    """Enqueue the vectors as one run, wait until each is final; returns the records."""
    client = redis.Redis.from_url(url)
    publish(make_app(url, keys), client, keys, Plan(run_id, Selection(), Expansion.of(vectors), {}), chunk=2)
    deadline = time.monotonic() + timeout
    while client.hlen(keys.final(run_id)) < len(vectors):
        assert time.monotonic() < deadline, f"run {run_id}: {client.hlen(keys.final(run_id))}/{len(vectors)} final"
        time.sleep(0.2)
    return [decode_record(r) for r in client.hvals(keys.records(run_id))]


def _wait(done, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _processes_of(home: Path) -> list[int]:
    """Running processes started for this home: its redis-server (which works in home/redis) and
    the workers and executors (their environment names the home's log directory)."""
    marker = f"SWEEPCTL_EXECUTOR_LOG={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cwd = os.readlink(entry / "cwd")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if cwd.startswith(str(home)) or marker in environ:
            found.append(int(entry.name))
    return found


@pytest.fixture
def home(tmp_path, monkeypatch):
    """SWEEPCTL_HOME for `up`/`down` in this test; whatever of it still runs afterwards is killed."""
    root = tmp_path / "home"
    monkeypatch.setenv("SWEEPCTL_HOME", str(root))
    monkeypatch.setenv("SWEEPCTL_ENABLE_TEST_OPS", "1")
    monkeypatch.delenv("SWEEPCTL_REDIS_URL", raising=False)
    monkeypatch.delenv("SWEEPCTL_PREFIX", raising=False)
    yield root
    for pid in _processes_of(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _up(capsys, *argv: str) -> dict:
    assert main(["up", "--machines", "n300", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def _json(capsys, *argv: str):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: embedded.identify(pid) is None, 10, f"pid {pid} did not die")


def _worker(url: str, name: str, log: Path) -> subprocess.Popen:
    return start_worker(url, log, "--machine", "n300", "--name", name, append=True)


def _consuming(log: Path) -> bool:
    """The worker's Celery consumer is up (its SIGTERM handler is installed from then on)."""
    return log.exists() and "worker_ready" in log.read_text()


def _row(client: redis.Redis, name: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(Keys().worker(name)).items()}


# --- D2: worker names --------------------------------------------------------------------------


def test_a_live_workers_name_is_refused_and_of_two_started_at_once_exactly_one_gets_it(redis_server, tmp_path):
    client = redis.Redis.from_url(redis_server)
    twins = [_worker(redis_server, "twin", tmp_path / f"twin{i}.log") for i in range(2)]
    try:
        _wait(lambda: any(p.poll() is not None for p in twins), 60, "neither twin was refused")
        loser = next(i for i, p in enumerate(twins) if p.poll() is not None)
        winner = twins[1 - loser]
        assert twins[loser].returncode == 2
        err = (tmp_path / f"twin{loser}.log").read_text().strip().splitlines()
        assert len(err) == 1 and "worker name twin: in use by a live worker" in err[0], err
        _wait(lambda: _row(client, "twin").get("health") == "GOOD", 120, "the winner did not open its executor")
        assert winner.poll() is None and _row(client, "twin")["pid"] == str(winner.pid)

        late = subprocess.run([sys.executable, "-m", "broker.cli", "worker", "--machine", "n300", "--backend",
                               "emulated", "--name", "twin", "--redis", redis_server],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert late.returncode == 2 and late.stdout == "" and len(late.stderr.strip().splitlines()) == 1
        assert f"pid {winner.pid} on {HOST}" in late.stderr and "Traceback" not in late.stderr
        assert _row(client, "twin")["pid"] == str(winner.pid)  # the refused ones wrote nothing
    finally:
        for proc in twins:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)

    # the same race, eight ways at once, straight at the registry
    barrier, won, refused = threading.Barrier(8), [], []

    def take() -> None:
        own = redis.Redis.from_url(redis_server)
        barrier.wait()
        try:
            won.append(registry.register(own, Keys(), "octo", {"pid": threading.get_ident(), "host": HOST}))
        except registry.NameTaken:
            refused.append(1)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(refused) == 7 and _row(client, "octo")["instance"] == won[0]


def test_a_worker_that_lost_its_name_while_stopped_exits_and_leaves_the_new_holder_be(redis_server, tmp_path, capsys):
    client = redis.Redis.from_url(redis_server)
    first = _worker(redis_server, "w", tmp_path / "first.log")
    second = None
    try:
        _wait(lambda: _consuming(tmp_path / "first.log"), 120, "the first worker did not start consuming")
        os.kill(first.pid, signal.SIGSTOP)  # suspended: no heartbeat
        lapsed = time.time() - registry.LIVE_WITHIN - 1  # as if LIVE_WITHIN seconds went by
        client.hset(Keys().worker("w"), "heartbeat", lapsed)
        rows = _json(capsys, "workers", "--redis", redis_server)
        assert [(r["name"], r["health"], r["pid"]) for r in rows] == [("w", "LOST", first.pid)]
        second = _worker(redis_server, "w", tmp_path / "second.log")  # the name is free: taken over
        _wait(lambda: _row(client, "w").get("pid") == str(second.pid), 60, "the second worker did not take the name")
        _wait(lambda: _consuming(tmp_path / "second.log"), 120, "the second worker did not start consuming")
        os.kill(first.pid, signal.SIGCONT)  # resumed: its next heartbeat finds the name taken, and it exits
        assert first.wait(timeout=60) == 3, (tmp_path / "first.log").read_text()[-2000:]
        assert "another worker took the name w while this one was stopped" in (tmp_path / "first.log").read_text()
        row = _row(client, "w")
        assert row["pid"] == str(second.pid) and row["health"] == "GOOD", row
        assert second.poll() is None
        assert _json(capsys, "workers", "--redis", redis_server)[0]["health"] == "GOOD"
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(timeout=60)
        assert _row(client, "w")["health"] == "STOPPED"  # its own row, it does mark
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_up_replaces_a_killed_worker_under_a_free_name_and_status_counts_live_workers(home, capsys):
    state = _up(capsys, "--workers", "2")
    names = [w["name"] for w in state["started"]]
    assert names == [f"emu-n300-0@{HOST}", f"emu-n300-1@{HOST}"] and state["ready"] == names
    dead = state["started"][0]
    _kill9(dead["pid"])

    again = _up(capsys, "--workers", "2")  # emu-n300-0's heartbeat is still fresh, emu-n300-1 is alive
    assert [w["name"] for w in again["started"]] == [f"emu-n300-2@{HOST}"] and again["ready"] == [f"emu-n300-2@{HOST}"]
    assert again["url"] == state["url"] and not again["redis_restarted"]
    live = {w["name"]: w["pid"] for w in again["workers"]}
    assert live == {f"emu-n300-1@{HOST}": state["started"][1]["pid"], f"emu-n300-2@{HOST}": again["started"][0]["pid"]}

    client = redis.Redis.from_url(state["url"])
    client.hset(Keys().worker(dead["name"]), "heartbeat", time.time() - registry.LIVE_WITHIN - 1)  # time passes
    rows = {r["name"]: r for r in _json(capsys, "workers")}
    assert rows[dead["name"]]["health"] == "LOST" and rows[dead["name"]]["pid"] == dead["pid"]
    assert rows[dead["name"]]["last_heartbeat_s"] >= registry.LIVE_WITHIN
    assert {n: (r["health"], r["pid"], r["host"]) for n, r in rows.items() if n != dead["name"]} == {
        n: ("GOOD", pid, HOST) for n, pid in live.items()
    }
    records = _run(state["url"], Keys(), "r1", _noops("d2", 6))
    assert len(records) == 6 and {r["worker"] for r in records} <= set(live)
    assert _json(capsys, "status", "r1")["live_workers"] == 2

    third = _up(capsys, "--workers", "3")  # the lapsed name is free again: reused, and the LOST row replaced
    assert [w["name"] for w in third["started"]] == [dead["name"]]

    _kill9(json.loads((home / "state.json").read_text())["redis"]["pid"])  # the Redis dies; `down` still stops all
    assert main(["down"]) == 0
    out = capsys.readouterr().out
    assert "stopped 3 workers" in out and "nothing" not in out
    assert _processes_of(home) == [] and not (home / "state.json").exists()


# --- D3: the embedded Redis --------------------------------------------------------------------


def test_up_after_the_embedded_redis_was_killed_restarts_it_on_its_port_and_the_old_worker_finishes_a_run(home, capsys):
    state = _up(capsys, "--workers", "1")
    worker = state["started"][0]
    keys = Keys()
    assert len(_run(state["url"], keys, "before", _noops("before", 4))) == 4
    time.sleep(1.5)  # appendfsync everysec: the AOF has it
    _kill9(state["redis"]["pid"])
    assert main(["status", "before"]) == 2 and "does not answer" in capsys.readouterr().err

    again = _up(capsys, "--workers", "1")
    assert again["url"] == state["url"] and again["redis_restarted"] and again["started"] == []
    assert again["redis"]["pid"] != state["redis"]["pid"] and again["workers"] == [worker]
    client = redis.Redis.from_url(again["url"])
    assert client.hlen(keys.final("before")) == 4  # the same data dir: the AOF loaded
    records = _run(again["url"], keys, "after", _noops("after", 4))
    assert {r["worker"] for r in records} == {worker["name"]} and len(records) == 4  # the old worker ran it all
    assert embedded.is_running(worker)

    assert main(["down"]) == 0
    assert "stopped 1 workers and the redis-server" in capsys.readouterr().out
    assert _processes_of(home) == [] and not (home / "state.json").exists()
    assert main(["down"]) == 0 and "nothing to stop" in capsys.readouterr().out


def test_down_after_redis_was_restarted_by_hand_on_its_port_stops_it_and_the_workers(home, capsys):
    state = _up(capsys, "--workers", "1")
    _kill9(state["redis"]["pid"])
    by_hand = redis_process(Path(state["dir"]), state["port"], "--appendonly", "yes", "--save", "")
    try:
        wait_for_redis(state["url"])
        assert len(_processes_of(home)) == 3  # the worker, its executor, the Redis started by hand
        assert main(["down"]) == 0
        out = capsys.readouterr().out
        assert "stopped 1 workers and the redis-server at " + state["url"] in out and "nothing" not in out
        assert by_hand.wait(timeout=10) == 0  # a clean shutdown (SIGTERM)
        assert _processes_of(home) == [] and not (home / "state.json").exists()
    finally:
        if by_hand.poll() is None:
            by_hand.kill()
            by_hand.wait()


def test_down_never_signals_a_reused_pid_and_up_refuses_a_port_taken_by_another_process(home, capsys):
    _up(capsys, "--workers", "0")
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        recorded = json.loads((home / "state.json").read_text())
        earlier = {**embedded.identify(stranger.pid), "start": embedded.identify(stranger.pid)["start"] - 1}
        recorded["workers"].append({**earlier, "machine": "n300", "name": "emu-n300-0@" + HOST})
        (home / "state.json").write_text(json.dumps(recorded))  # as if that pid had been a worker's
        assert main(["down"]) == 0
        assert "stopped 0 workers and the redis-server" in capsys.readouterr().out
        assert stranger.poll() is None and not (home / "state.json").exists()
    finally:
        stranger.kill()
        stranger.wait()

    _up(capsys, "--workers", "0")
    recorded = json.loads((home / "state.json").read_text())
    _kill9(recorded["redis"]["pid"])
    other = home.parent / "other"  # another redis-server (another home's, say) took the port meanwhile
    other.mkdir()
    squatter = redis_process(other, recorded["port"], "--save", "")
    try:
        wait_for_redis(recorded["url"])
        assert main(["up", "--machines", "n300", "--workers", "0"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "port is taken by another process" in err
        assert main(["down"]) == 0 and squatter.poll() is None  # not ours: left alone
        assert "nothing was running" in capsys.readouterr().out
    finally:
        squatter.terminate()
        squatter.wait(timeout=10)
    assert _processes_of(home) == [] and not (home / "state.json").exists()
    (home / "state.json").write_text("{")  # a state that cannot be read: said, never guessed at
    assert main(["down"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "state.json: unreadable" in err


def test_up_asks_a_port_that_does_not_answer_once_and_says_so_in_one_line(home, capsys):
    """The embedded Redis died and a process that accepts connections but never answers (a hung
    server, say) holds its port: `up` probes it once (each probe waits out its timeout), exits 2."""
    _up(capsys, "--workers", "0")
    recorded = json.loads((home / "state.json").read_text())
    _kill9(recorded["redis"]["pid"])
    mute = socket.socket()
    mute.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _wait(lambda: embedded._port_free(recorded["port"]), 10, "the killed redis-server's port was not freed")
    mute.bind(("127.0.0.1", recorded["port"]))
    mute.listen(8)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: [accepted.append(mute.accept()[0]) for _ in range(8)], daemon=True).start()
    try:
        assert main(["up", "--machines", "n300", "--workers", "0"]) == 2
        assert len(accepted) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "does not answer as Redis" in err and "Traceback" not in err, err
    finally:
        mute.close()
        for conn in accepted:
            conn.close()
    assert _processes_of(home) == []  # nothing started on another port behind the user's back


def test_a_lost_worker_is_no_one_to_hand_work_to_while_it_still_holds_its_name(redis_server, capsys):
    """The two liveness windows of broker/registry.py: a worker silent for lost_after is passed over
    when a crashed vector looks for another device set, though `sweepctl workers` lists it (and its
    name stays taken) until LIVE_WITHIN."""
    client, keys = redis.Redis.from_url(redis_server), Keys("handoff")
    for name, machine, health in (("me", "n300", "GOOD"), ("bad", "n300", "BAD"), ("t3k", "t3k", "GOOD")):
        registry.register(client, keys, name, {"machine": machine, "health": health, "host": HOST, "pid": 1})
    assert not registry.another_good_worker(client, keys, "n300", "me", 5.0)  # BAD, another machine, itself
    registry.register(client, keys, "peer", {"machine": "n300", "health": "GOOD", "host": HOST, "pid": 2})
    assert registry.another_good_worker(client, keys, "n300", "me", 5.0)
    silent = time.time() - registry.lost_after(5.0) - 1
    client.zadd(keys.workers(), {"peer": silent})
    client.hset(keys.worker("peer"), "heartbeat", silent)
    assert not registry.another_good_worker(client, keys, "n300", "me", 5.0)
    rows = _json(capsys, "workers", "--redis", redis_server, "--prefix", "handoff")
    assert {r["name"]: r["health"] for r in rows}["peer"] == "GOOD"
    with pytest.raises(registry.NameTaken):
        registry.register(client, keys, "peer", {"machine": "n300", "health": "UNKNOWN", "host": HOST, "pid": 3})
