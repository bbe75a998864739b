"""Fleet-scale benchmark (run with `make bench`): how far one Redis carries a fleet.

N emulated workers (N = 1, 4, 16), each a real `sweepctl worker` with its executor, on one real
redis-server, run the test op that sleeps 4 ms (a cached device op's e2e: 250 vectors/s per device
at best). Per N, over a window in which every worker is busy (10% to 45% of the run done):

* vectors/s and its share of the N x 250/s ideal (target >= 90% at N = 16);
* Redis commands per vector: every command Redis executed (INFO commandstats, those run inside the
  write and claim scripts included), and the requests clients sent (target <= 1), counted from a
  short `redis-cli monitor` sample after the window (MONITOR marks in-script commands `lua`);
* Redis CPU per vector (INFO cpu, user + sys) and sweepctl's own CPU per vector (every worker
  and executor process, from /proc);
* the projected number of such devices one Redis carries at 70% of its capacity here, two ways:
  from the Redis CPU a vector costs in this run (Redis runs commands on one thread, so it saturates
  at one core), and from the request rate `redis-benchmark` measures for a plain command
  (an upper bound: our requests are scripts, heavier than a SET).

On this 2-core machine the workers share two cores with Redis and the benchmark: the table says
what each costs, so what limits the rate is read off it rather than guessed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from broker.app import make_app
from broker.coordinator import Plan, publish
from broker.keys import Keys
from sweeps.suites import Expansion, Selection
from sweeps.vector import make_vector
from tests.conftest import emulated_worker

OP_S = 0.004
PER_DEVICE = 1 / OP_S  # vectors/s one device runs at best
CHUNKS_PER_WORKER = 8  # enough that every worker is still busy when the window closes
CHUNK = 512
FLEETS = (1, 4, 16)
_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the processes and their children (a worker and its executor)."""
    total = 0.0
    for pid in pids:
        family = [pid]
        with contextlib.suppress(OSError):
            family += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        for member in family:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


class _Watch:
    """The benchmark's own view of the run; counts the commands it sends, which are not the fleet's."""

    def __init__(self, client: redis.Redis, keys: Keys, run_id: str, pids: list[int]) -> None:
        self.client, self.key, self.pids, self.sent = client, keys.agg(run_id), pids, 0

    def done(self) -> int:
        self.sent += 1
        return int(self.client.hget(self.key, "done") or 0)

    def wait(self, target: int, deadline: float) -> None:
        while self.done() < target:
            if time.monotonic() > deadline:
                pytest.fail(f"the run stalled below {target} vectors done")
            time.sleep(0.1)

    def sample(self) -> dict[str, float]:
        stats = self.client.info("commandstats")
        cpu = self.client.info("cpu")
        self.sent += 2
        return {
            "t": time.monotonic(),
            "done": self.done(),
            "commands": sum(v["calls"] for v in stats.values()) - self.sent,
            "redis_cpu": cpu["used_cpu_user"] + cpu["used_cpu_sys"],
            "worker_cpu": _cpu_seconds(self.pids),
        }


def _requests_per_vector(url: str, watch: _Watch, seconds: float, out: Path) -> tuple[float, float]:
    """(client requests, in-script commands) per vector, from `redis-cli monitor` over `seconds`."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    with open(out, "wb") as sink:
        monitor = subprocess.Popen([shutil.which("redis-cli"), "-p", port, "monitor"], stdout=sink)
        time.sleep(0.5)  # connected and monitoring
        before = watch.done()
        time.sleep(seconds)
        after = watch.done()
        time.sleep(0.5)  # the monitor has printed that read too (under load it lags)
        monitor.terminate()
        monitor.wait(timeout=10)
    lines = out.read_bytes().splitlines()
    marks = [i for i, line in enumerate(lines) if b'"hget"' in line.lower() and watch.key.encode() in line]
    assert len(marks) >= 2, "the monitor sample missed the benchmark's reads of done"
    start, end = marks[0], marks[-1]
    window = lines[start + 1 : end]  # between the two reads of done
    lua = sum(1 for line in window if b" lua]" in line)
    return (len(window) - lua) / max(1, after - before), lua / max(1, after - before)


def _redis_benchmark_rate(url: str) -> float:
    """Requests/s redis-benchmark gets for SET (50 clients, no pipelining) on this machine now."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    done = subprocess.run([shutil.which("redis-benchmark"), "-p", port, "-t", "set", "-n", "200000", "-c", "50", "-q"],
                          capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    return float(re.findall(r"([\d.]+) requests per second", done.stdout)[-1])


def _fleet(url: str, tmp_path: Path, workers: int) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    keys = Keys(f"fleet{workers}")
    run_id = f"sleep{workers}"
    n = workers * CHUNKS_PER_WORKER * CHUNK
    tensor = {"tensor": {"shape": [1, 1, 32, 32], "dtype": "BFLOAT16", "layout": "TILE", "memory_config": None}}
    vectors = [
        make_vector("sweepctl.test.sleep", "bench", "n300", [1, 2], [tensor, i], {"seconds": OP_S}, 30.0)
        for i in range(n)
    ]
    with contextlib.ExitStack() as stack:
        procs = []
        for w in range(workers):
            log_dir = tmp_path / f"n{workers}" / f"w{w}"
            log_dir.mkdir(parents=True)
            procs.append(stack.enter_context(emulated_worker(url, keys.prefix, f"f{workers}-{w}", log_dir,
                                                             SWEEPCTL_HEARTBEAT="5")))  # fmt: skip
        deadline = time.monotonic() + 600
        logs = [tmp_path / f"n{workers}" / f"w{w}" / "worker.log" for w in range(workers)]
        while not all(b"worker_ready" in log.read_bytes() for log in logs):  # every executor open
            if time.monotonic() > deadline:
                pytest.fail(f"{workers} workers did not all start")
            time.sleep(0.5)
        watch = _Watch(client, keys, run_id, [p.pid for p in procs])
        publish(make_app(url, keys), client, keys, Plan(run_id, Selection(), Expansion.of(vectors), {}), chunk=CHUNK)
        deadline = time.monotonic() + 900
        watch.wait(n // 10, deadline)
        first = watch.sample()
        watch.wait(n * 45 // 100, deadline)
        last = watch.sample()
        requests, in_scripts = _requests_per_vector(url, watch, 2.0, tmp_path / f"monitor{workers}.txt")
        watch.wait(n, deadline)
    vectors_done = last["done"] - first["done"]
    rate = vectors_done / (last["t"] - first["t"])
    return {
        "workers": workers,
        "rate": rate,
        "ideal": rate / (workers * PER_DEVICE),
        "commands": (last["commands"] - first["commands"]) / vectors_done,
        "requests": requests,
        "in_scripts": in_scripts,
        "redis_cpu_ms": (last["redis_cpu"] - first["redis_cpu"]) / vectors_done * 1000,
        "worker_cpu_ms": (last["worker_cpu"] - first["worker_cpu"]) / vectors_done * 1000,
    }


@pytest.mark.bench
def test_bench_fleet(redis_server, tmp_path):
    rows = [_fleet(redis_server, tmp_path, n) for n in FLEETS]
    set_rate = _redis_benchmark_rate(redis_server)
    print(f"\nfleet: {OP_S * 1000:g} ms test op, chunks of {CHUNK}, one redis-server; window 10%-45% of each run")
    print(f"{'N':>3} {'vectors/s':>10} {'of ideal':>9} {'cmds/vec':>9} {'requests/vec':>13} {'Redis CPU/vec':>14} "
          f"{'sweepctl CPU/vec':>17} {'devices/Redis (CPU)':>20} {'(requests)':>11}")  # fmt: skip
    for row in rows:
        by_cpu = 0.7 / (row["redis_cpu_ms"] / 1000) / PER_DEVICE
        by_requests = 0.7 * set_rate / max(row["requests"], 1e-9) / PER_DEVICE
        print(f"{row['workers']:>3} {row['rate']:>10,.0f} {row['ideal']:>8.0%} {row['commands']:>9.2f} "
              f"{row['requests']:>13.2f} {row['redis_cpu_ms']:>11.3f} ms {row['worker_cpu_ms']:>14.3f} ms "
              f"{by_cpu:>20,.0f} {by_requests:>11,.0f}")  # fmt: skip
    print(
        f"cmds/vec: every command Redis ran (INFO commandstats, in-script ones included); requests/vec: what "
        f"clients sent (redis-cli monitor sample, {rows[-1]['in_scripts']:.1f} in-script commands per vector at "
        f"N={rows[-1]['workers']}). Devices per Redis at 70%: by CPU, 0.7 core / Redis CPU per vector / "
        f"{PER_DEVICE:.0f} vectors/s; by requests, 0.7 x redis-benchmark SET rate ({set_rate:,.0f}/s here) / "
        f"requests per vector / {PER_DEVICE:.0f}. This machine has {os.cpu_count()} cores for Redis, the "
        f"benchmark and N workers with their executors."
    )
