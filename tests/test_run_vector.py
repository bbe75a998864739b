"""`sweepctl run`: one vector in the CLI's own process (each call is a fresh `sweepctl` process,
as a user runs it: ttnn may be imported once per process, with one cluster descriptor), from a
run in a real redis-server or built from a real store, printing the record a worker would write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sweeps.profiles import get_profile
from tests.conftest import DEEPSEEK, ROOT, SAMPLE, cli

# the one Galaxy-sized shard grid of the sample store, traced on n300: host validation rejects it
SAMPLE_INVALID_ON_N300 = "ef6c6353258e"
# DeepSeek-V3's linear with a DRAM height-sharded bfloat8_b weight over 12 banks, on its Galaxy
DEEPSEEK_SHARDED_LINEAR = "60af7b2ab4d1"


def sweepctl(*args: str, cwd=ROOT, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "broker.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=180)  # fmt: skip


def test_run_a_vector_of_a_run_in_this_process_writes_nothing(redis_server):
    prefix = "t-run"
    enqueued = cli(redis_server, prefix, "enqueue", "--store", str(SAMPLE), "--op", "add", "--run-id", "R1")
    assert enqueued.returncode == 0, enqueued.stderr
    import redis

    from broker.keys import Keys
    from sweeps.vector import decode

    client, keys = redis.Redis.from_url(redis_server), Keys(prefix)
    vectors = {k.decode(): decode(v) for k, v in client.hgetall(keys.vectors("R1")).items()}
    galaxy = min(v for v, vector in vectors.items() if vector["machine"] == "galaxy")
    before = {k: client.type(k) for k in client.keys(f"{prefix}:*")}
    records_before = client.hlen(keys.records("R1"))

    done = cli(redis_server, prefix, "run", galaxy[:12], "--backend", "emulated", "--json")  # the latest run: R1
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)  # stdout is the record alone: ttnn's own output went to stderr
    assert (record["vector"], record["run"], record["status"], record["backend"]) == (galaxy, "R1", "PASS", "emulated")
    assert record["machine"] == "galaxy" and record["pcc"] >= record["threshold"]
    assert "device_perf" not in record  # no profiler here: absent, not zero
    assert {k: client.type(k) for k in client.keys(f"{prefix}:*")} == before  # nothing written to Redis
    assert client.hlen(keys.records("R1")) == records_before

    booked = cli(redis_server, prefix, "run", SAMPLE_INVALID_ON_N300, "--run", "R1", "--backend", "emulated")
    assert booked.returncode == 1
    assert "INVALID" in booked.stdout and "outside the n300 compute grid" in booked.stdout
    assert "booked by enqueue: no worker runs this vector" in booked.stdout

    unknown = cli(redis_server, prefix, "run", "abcdef012345", "--backend", "emulated")
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert unknown.stderr.strip().splitlines() == [
        "sweepctl: error: vector abcdef012345: no vector of run R1 has this id"
    ]


def test_run_from_a_store_on_ttnn_says_the_device_could_not_be_opened(tmp_path):
    """No device here: the ttnn backend fails at the device open, honestly, as the daemon books it.
    With the Galaxy mock cluster in the environment (as a user may have it) ttnn gets as far as
    writing its fabric files before the open fails: they go to the process's own working directory
    (removed at exit), not to the directory it was started in."""
    started_in = tmp_path / "here"
    started_in.mkdir()
    env = {**os.environ, "TT_METAL_MOCK_CLUSTER_DESC_PATH": get_profile("galaxy").mock_cluster_path}
    done = sweepctl("run", DEEPSEEK_SHARDED_LINEAR, "--store", str(DEEPSEEK), "--backend", "ttnn", cwd=started_in,
                    env=env)  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"vector {DEEPSEEK_SHARDED_LINEAR}a7f995f919c281f8af55 of store {DEEPSEEK}"
    assert "ttnn.linear on galaxy, mesh 4x8" in lines[1]
    assert any("DRAM HEIGHT_SHARDED grid [(0,0)-(11,0)] (12 cores) shard [5632, 128]" in line for line in lines)
    assert "INFRA" in lines and "backend ttnn could not open the device: RuntimeError: " in done.stdout
    assert "FabricConfig::DISABLED to FabricConfig::FABRIC_2D" in done.stderr  # fabric set, then the open failed
    assert list(started_in.iterdir()) == []  # ttnn's generated/fabric/*.yaml are not here
    assert list((Path(os.environ["SWEEPCTL_CACHE_DIR"]) / "workdirs").iterdir()) == []  # and removed them at exit

    ambiguous = sweepctl("run", "1c97ee", "--store", str(DEEPSEEK), "--backend", "ttnn", "--run", "R")
    assert ambiguous.returncode == 2
    assert (
        ambiguous.stderr.strip()
        == "sweepctl: error: --run: give --run (a vector of a run in Redis) or --store, not both"
    )


def test_quitting_the_debugger_at_a_breakpoint_is_no_verdict():
    """`q` at a breakpoint inside the judged run (here: in the emulated backend, set from pdb as a
    user sets one) stops the run: one line says so, exit 130, and no record blames the op or sweepctl."""
    source = (ROOT / "workers" / "emulated.py").read_text().splitlines()
    line = source.index("        prepared = prepare(ttnn, opdef, vector)") + 1
    argv = ["run", DEEPSEEK_SHARDED_LINEAR, "--store", str(DEEPSEEK), "--backend", "emulated"]
    debug = (
        "import pdb, sys\nfrom broker.cli import main\n"
        "debugger = pdb.Pdb(readrc=False)\n"
        f"debugger.rcLines += ['break {ROOT / 'workers' / 'emulated.py'}:{line}', 'continue']\n"
        f"sys.exit(debugger.runcall(main, {argv!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", debug], input="q\n", capture_output=True, text=True, cwd=ROOT,
                          timeout=180)  # fmt: skip
    assert "emulated.py" in done.stdout + done.stderr and "(Pdb)" in done.stdout + done.stderr  # it stopped there
    assert done.returncode == 130, (done.stdout, done.stderr[-2000:])
    said = "sweepctl run: stopped in the debugger: vector 60af7b2ab4d1a7f995f919c281f8af55 has no verdict"
    assert said in done.stderr  # after the "(Pdb) " prompt that read the q
    assert "Traceback" not in done.stderr and "BdbQuit" not in done.stdout + done.stderr
    assert "ERROR" not in done.stdout and "FAIL_OP" not in done.stdout  # no record printed at all
    assert "vector 60af7b2ab4d1" not in done.stdout


def test_executors_of_one_owner_each_keep_a_working_directory_of_their_own(tmp_path, monkeypatch):
    """Two executors of one process (the corpus runs two per machine): the first one's clean exit
    removes only its own directory; the second's stays (a process whose directory is removed under
    it cannot import torch: oneMKL "Cannot load libtorch_cpu.so"). Both gone, nothing is left."""
    from workers.executor import Executor

    monkeypatch.setenv("SWEEPCTL_CACHE_DIR", str(tmp_path))
    first, second = Executor("n150", "emulated", []), Executor("n150", "emulated", [])
    first.start()
    second.start()
    try:
        where = Path(os.readlink(f"/proc/{second.proc.pid}/cwd"))
        assert where.parent == tmp_path / "workdirs" / str(os.getpid())
        first.stop()
        assert os.readlink(f"/proc/{second.proc.pid}/cwd") == str(where) and where.is_dir()
    finally:
        first.stop()
        second.stop()
    assert list((tmp_path / "workdirs").iterdir()) == []
