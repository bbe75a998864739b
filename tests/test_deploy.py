"""Deployment, with real processes: Celery's own tools (`celery -A broker.app inspect`, Flower) reach
real workers through the key prefix and the shipped ACL; the files in deploy/ (compose, systemd
unit, env example) are checked against each other and against sweepctl's CLI."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import yaml

from broker.app import make_app
from broker.cli import build_parser
from broker.cli.commands import cmd_worker, worker_target
from broker.coordinator import Plan, publish
from broker.embedded import free_port
from broker.keys import Keys
from sweeps.suites import Expansion, Selection
from sweeps.vector import make_vector
from tests.conftest import ROOT, redis_process, start_worker, stop_processes, stop_redis, wait_for_redis

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
UNIT = DEPLOY / "sweepctl-worker@.service"
FLOWER_LOGIN = "ops:flower-test"


def _acl_users() -> dict[str, str]:
    """users.acl: user name -> its ACL line."""
    lines = (DEPLOY / "users.acl").read_text().splitlines()
    return {line.split()[1]: line for line in lines if line.startswith("user ")}


def _redis_conf() -> dict[str, str]:
    directives = {}
    for line in (DEPLOY / "redis.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.strip().partition(" ")
            directives[name] = value
    return directives


# --- a deployment: the shipped redis.conf and users.acl, two real workers -------------------------


@dataclass
class Deployment:
    port: int
    tmp: Path
    quiet: str  # default flags: no events, no Celery heartbeats
    loud: str  # --events, started by --instance n300:0

    def url(self, user: str) -> str:
        return f"redis://{user}:change-me-{user}@127.0.0.1:{self.port}/0"

    def env(self, user: str = "monitor") -> dict[str, str]:
        """Celery's tools as an operator runs them: pointed at the deployment by the environment."""
        return {**os.environ, "SWEEPCTL_REDIS_URL": self.url(user), "SWEEPCTL_PREFIX": "sweepctl",
                "SWEEPCTL_HOME": str(self.tmp / "home")}  # fmt: skip


def _wait(done, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(what)
        time.sleep(0.1)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("deploy")
    port = free_port()
    server = redis_process(tmp, port, "--aclfile", str(DEPLOY / "users.acl"), "--daemonize", "no",
                           conf_file=DEPLOY / "redis.conf")  # fmt: skip
    deployment = Deployment(port, tmp, quiet="quiet@test", loud=f"n300:0@{socket.gethostname()}")
    workers: list[subprocess.Popen] = []
    try:
        wait_for_redis(deployment.url("coordinator"))
        env = {**os.environ, "SWEEPCTL_ENABLE_TEST_OPS": "1"}
        for name, flags in (("quiet", ["--machine", "n150", "--name", deployment.quiet]),
                            ("loud", ["--instance", "n300:0", "--events"])):  # fmt: skip
            workers.append(start_worker(deployment.url("worker"), tmp / f"{name}.log", *flags, env=env))
        for name, proc in zip(("quiet", "loud"), workers, strict=True):
            log = tmp / f"{name}.log"
            _wait(lambda log=log: "worker_ready" in log.read_text(), 120, f"{name} worker never consumed")
            assert proc.poll() is None, log.read_text()[-2000:]
        yield deployment
    finally:
        stop_processes(*workers, timeout=30, force=True)
        stop_redis(server)


def _celery(deployment: Deployment, *argv: str) -> dict:
    """`celery -A broker.app ARGV --json` as the `monitor` user; its JSON reply by worker name."""
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "broker.app", *argv, "--json"], cwd=ROOT,
                          env=deployment.env(), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return {name: reply for line in done.stdout.splitlines() if line.startswith("{")
            for name, reply in json.loads(line).items()}  # fmt: skip


@pytest.mark.slow
def test_celery_inspect_reaches_both_workers_through_the_prefix_and_the_monitor_acl(deployment):
    """`celery -A broker.app inspect` as an operator runs it, as the `monitor` user, whose channels are
    only `sweepctl:celery:*`: the broadcast is published on the prefixed pidbox channel and the replies
    come back on prefixed lists. Both workers answer, the one with default flags too."""
    pings = _celery(deployment, "inspect", "ping")
    assert pings == {deployment.quiet: {"ok": "pong"}, deployment.loud: {"ok": "pong"}}
    queues = _celery(deployment, "inspect", "active_queues")
    names = {name: [q["name"] for q in reply] for name, reply in queues.items()}
    assert names == {deployment.quiet: ["sweeps.n150"], deployment.loud: ["sweeps.n300"]}
    # each machine's queue is bound under its own exchange and routing key, so a message published by
    # routing key reaches that machine only (not every queue bound under Celery's default `sweeps.n150`)
    bindings = {q["name"]: (q["exchange"]["name"], q["routing_key"]) for reply in queues.values() for q in reply}
    assert bindings == {"sweeps.n150": ("sweeps.n150", "sweeps.n150"), "sweeps.n300": ("sweeps.n300", "sweeps.n300")}
    app = make_app(deployment.url("monitor"), Keys())  # `inspect stats` through the API, without the 1 s wait
    stats = app.control.inspect(destination=[deployment.loud], limit=1, timeout=10).stats()
    assert stats[deployment.loud]["pool"]["max-concurrency"] == 1
    assert stats[deployment.loud]["broker"]["transport_options"]["global_keyprefix"] == "sweepctl:celery:"


def _flower(port: int, path: str):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    request.add_header("Authorization", "Basic " + base64.b64encode(FLOWER_LOGIN.encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


@pytest.mark.slow
def test_flower_lists_the_events_worker_its_queue_and_its_chunks(deployment):
    """Flower, as compose runs it (`celery -A broker.app flower`, basic auth, the `monitor` user): its
    API lists both workers; only the --events one is alive by its heartbeats; the queue depth it
    reads under the prefix counts the chunk waiting behind a running one; and the task events of the
    --events worker show both chunks succeeded on it."""
    port = free_port()
    log = open(deployment.tmp / "flower.log", "wb")  # noqa: SIM115 - the child's
    env = {**deployment.env(), "FLOWER_BASIC_AUTH": FLOWER_LOGIN}
    flower = subprocess.Popen([sys.executable, "-m", "celery", "-A", "broker.app", "flower", "--address=127.0.0.1",
                               f"--port={port}"], cwd=ROOT, env=env, stdout=log, stderr=log,
                              start_new_session=True)  # fmt: skip
    try:

        def listed() -> bool:
            try:
                return {deployment.quiet, deployment.loud} <= set(_flower(port, "/api/workers?refresh=1"))
            except (urllib.error.URLError, ConnectionError):
                return False

        _wait(listed, 20, "Flower never listed both workers: " + (deployment.tmp / "flower.log").read_text()[-2000:])
        workers = _flower(port, "/api/workers")
        assert [q["name"] for q in workers[deployment.loud]["active_queues"]] == ["sweeps.n300"]
        _wait(lambda: _flower(port, "/api/workers?status=1").get(deployment.loud) is True, 10, "no heartbeat seen")
        assert _flower(port, "/api/workers?status=1").get(deployment.quiet) is not True  # it sends none

        keys = Keys()
        coordinator = redis.Redis.from_url(deployment.url("coordinator"))
        vectors = [make_vector("sweepctl.test.sleep", "flower", "n300", [1, 2], [1], {"seconds": 3.0}, 30.0),
                   make_vector("sweepctl.test.noop", "flower", "n300", [1, 2], [2], {}, 30.0)]  # fmt: skip
        plan = Plan("flower-run", Selection(), Expansion.of(vectors), {})
        publish(make_app(deployment.url("coordinator"), keys), coordinator, keys, plan, chunk=1)

        def waiting() -> int:
            lengths = _flower(port, "/api/queues/length")["active_queues"]
            return next(q["messages"] for q in lengths if q["name"] == "sweeps.n300")

        _wait(lambda: waiting() == 1, 10, "Flower never counted the chunk waiting behind the running one")
        _wait(lambda: coordinator.hlen(keys.final("flower-run")) == 2, 30, "the run did not finish")

        def chunks() -> list[dict]:
            tasks = _flower(port, "/api/tasks").values()
            return [t for t in tasks if t["name"] == "sweepctl.run_chunk" and t["state"] == "SUCCESS"]

        _wait(lambda: len(chunks()) == 2, 10, "Flower did not see both chunks succeed")
        assert {t["worker"] for t in chunks()} == {deployment.loud}
        assert waiting() == 0
    finally:
        stop_processes(flower, timeout=30, force=True)


def test_celery_tools_without_a_redis_say_so_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEPCTL_REDIS_URL", "SWEEPCTL_PREFIX")}
    env["SWEEPCTL_HOME"] = str(tmp_path / "nothing-up")
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "broker.app", "inspect", "ping"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "sweepctl: error: redis: no Redis to talk to: run `sweepctl up`, or pass --redis URL / set SWEEPCTL_REDIS_URL"
    ]


def test_the_module_app_follows_the_environment_without_connecting_or_loading_ttnn(tmp_path):
    """`broker.app.app` is built on first use from SWEEPCTL_REDIS_URL and SWEEPCTL_PREFIX; importing and
    building it opens no connection (the URL points at a closed port) and loads neither ttnn nor torch."""
    url = f"redis://127.0.0.1:{free_port()}/3"
    code = (
        "import sys, broker.app; assert '_module_app' in vars(broker.app) and broker.app._module_app is None; "
        "app = broker.app.app; assert app is broker.app.app; "
        "print(app.conf.broker_url, app.conf.broker_transport_options['global_keyprefix'], "
        "sorted(m for m in ('ttnn', 'torch') if m in sys.modules))"
    )
    env = {**os.environ, "SWEEPCTL_REDIS_URL": url, "SWEEPCTL_PREFIX": "team2", "SWEEPCTL_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [url, "team2:celery:", "[]"]


# --- the worker's device set, as a systemd instance names it ------------------------------------


def test_an_instance_names_the_machine_and_its_device_set():
    parse, host = build_parser().parse_args, socket.gethostname()
    galaxy = worker_target(parse(["worker", "--instance", "galaxy:0-31"]))
    assert galaxy == ("galaxy", [*range(32)], f"galaxy:0-31@{host}")
    assert worker_target(parse(["worker", "--instance", "t3k"])) == ("t3k", [*range(4)], f"t3k@{host}")  # PCIe ids
    assert worker_target(parse(["worker", "--machine", "n300", "--devices", "1"])) == ("n300", [1], None)
    assert worker_target(parse(["worker", "--machine", "t3k", "--devices", "0-1,4-5"]))[1] == [0, 1, 4, 5]


NOT_A_RANGE = "is not a device id or range (e.g. 0,1 or 0-31)"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--machine", "n300", "--devices", "0,x"], f"devices 0,x: 'x' {NOT_A_RANGE}"),
        (["--machine", "n300", "--devices", "3-1"], f"devices 3-1: '3-1' {NOT_A_RANGE}"),
        (["--machine", "n300", "--devices", "0-2,1"], "devices 0-2,1: names a device twice"),
        (["--instance", "galaxy:"], "--instance 'galaxy:': expected MACHINE or MACHINE:DEVICES, e.g. galaxy:0-31"),
        (["--instance", "n300:0-1", "--machine", "n300"],
         "--instance n300:0-1: give --instance or --machine/--devices, not both"),
        (["--instance", "wormhole:0"],
         "--machine wormhole: unknown machine type (known: n150, n300, t3k, galaxy, p150, p300)"),
        ([], "sweepctl worker: --machine (or --instance MACHINE:DEVICES) is required"),
        (["--machine", "t3k", "--devices", "0-7"],
         "devices 0-7: a t3k is 4 PCIe devices of 2 chips (TT_VISIBLE_DEVICES selects PCIe devices, not chips): "
         "give 4 ids, e.g. 0-3"),
        (["--instance", "n300:0-1"], "devices 0-1: a n300 is 1 PCIe device of 2 chips (TT_VISIBLE_DEVICES selects "
                                     "PCIe devices, not chips): give 1 id, e.g. 0"),
    ],
)  # fmt: skip
def test_a_bad_device_set_or_instance_is_one_line_and_exit_2_before_any_connection(argv, message, capsys):
    from broker.cli import main

    # a Redis URL nothing answers on: the input is refused before anything connects
    assert main(["worker", "--redis", f"redis://127.0.0.1:{free_port()}/0", *argv]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"sweepctl: error: {message}"]


# --- deploy/ files -------------------------------------------------------------------------------


def _interpolate(text: str) -> str:
    """Compose's `${VAR:-default}` with nothing set: the default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def _target(volume: str) -> tuple[str, str]:
    source, target = volume.split(":")[:2]
    return source, target


def test_compose_runs_redis_on_the_shipped_config_and_acl_with_flower_and_emulated_workers():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"redis", "flower", "emulated-worker"}

    redis_service = services["redis"]
    mounts = dict(_target(v) for v in redis_service["volumes"])
    command = redis_service["command"]
    assert command[0] == "redis-server"
    conf_in_container = command[1]
    acl_in_container = command[command.index("--aclfile") + 1]
    by_target = {target: source for source, target in mounts.items()}
    assert (COMPOSE.parent / by_target[conf_in_container]).resolve() == (DEPLOY / "redis.conf").resolve()
    assert (COMPOSE.parent / by_target[acl_in_container]).resolve() == (DEPLOY / "users.acl").resolve()
    assert all(v.endswith(":ro") for v in redis_service["volumes"] if not v.startswith("redis-data:"))
    data_dir = command[command.index("--dir") + 1] if "--dir" in command else _redis_conf()["dir"]
    assert by_target[data_dir] in compose["volumes"]  # AOF on a named volume, not in the container
    conf = _redis_conf()
    assert conf["appendonly"] == "yes" and conf["maxmemory-policy"] == "noeviction"
    assert redis_service["ports"] == [f"{conf['port']}:{conf['port']}"]
    assert "monitor" in " ".join(redis_service["healthcheck"]["test"])

    users = _acl_users()
    for name, user in (("flower", "monitor"), ("emulated-worker", "worker")):
        url = _interpolate(services[name]["environment"]["SWEEPCTL_REDIS_URL"])
        assert url == f"redis://{user}:change-me-{user}@redis:{conf['port']}/0"
        assert f">change-me-{user} " in users[user]
        assert services[name]["depends_on"] == {"redis": {"condition": "service_healthy"}}
        assert services[name]["environment"]["SWEEPCTL_PREFIX"] == "sweepctl"  # the prefix users.acl names

    flower = services["flower"]
    assert flower["command"][:4] == ["celery", "-A", "broker.app", "flower"]
    assert "FLOWER_BASIC_AUTH" in flower["environment"]  # Flower's API refuses to run unauthenticated
    assert flower["ports"] == ["5555:5555"] and "--port=5555" in flower["command"]

    worker = services["emulated-worker"]
    assert worker["profiles"] == ["emulated"]  # only with --profile emulated
    assert worker["stop_signal"] == "SIGTERM" and worker["init"] is True
    assert worker["command"][:2] == ["sweepctl", "worker"]
    args = build_parser().parse_args([_interpolate(a) for a in worker["command"][1:]])
    assert (args.func, worker_target(args)[0], args.backend, args.events) == (cmd_worker, "n300", "emulated", True)
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for name in ("flower", "emulated-worker"):
        build = services[name]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()
        assert f" AS {build['target']}\n" in dockerfile


def test_the_monitor_user_reaches_celerys_keys_and_channels_only():
    monitor = _acl_users()["monitor"].split()
    assert "resetchannels" in monitor and "&*" not in monitor and "allkeys" not in monitor
    assert [p for p in monitor if p.startswith(("~", "%"))] == ["~sweepctl:celery:*"]


def _unit() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_unit_runs_a_worker_per_instance_with_a_warm_shutdown():
    unit = _unit()
    assert unit["Restart"] == ["on-failure"]
    assert unit["KillSignal"] == ["SIGTERM"] and unit["KillMode"] == ["mixed"]
    assert int(unit["TimeoutStopSec"][0]) >= 120 * 2.0 + 40  # a Galaxy conv vector's timeout, then closing
    assert unit["EnvironmentFile"] == ["/etc/sweepctl/worker.env"]
    # the command line, as systemd expands it for sweepctl-worker@galaxy:0-31 with the example env file
    env = dict(line.split("=", 1) for line in (DEPLOY / "worker.env.example").read_text().splitlines()
               if line and not line.startswith("#"))  # fmt: skip
    exec_start = unit["ExecStart"][0].replace("%i", "galaxy:0-31").replace("$SWEEPCTL_WORKER_OPTIONS", env.get(
        "SWEEPCTL_WORKER_OPTIONS", ""))  # fmt: skip
    argv = shlex.split(exec_start)
    assert argv[0].endswith("/sweepctl")
    args = build_parser().parse_args(argv[1:])
    assert worker_target(args) == ("galaxy", list(range(32)), f"galaxy:0-31@{socket.gethostname()}")
    assert args.backend == "ttnn" and args.events
    assert set(env) <= {"SWEEPCTL_REDIS_URL", "SWEEPCTL_PREFIX", "SWEEPCTL_WORKER_OPTIONS"}
    assert env["SWEEPCTL_REDIS_URL"].startswith("redis://worker:change-me-worker@")


def test_systemd_analyze_verifies_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (`which systemd-analyze` finds nothing)")
    # verify checks that ExecStart's binary exists: point it at this checkout's sweepctl
    sweepctl = Path(sys.executable).with_name("sweepctl")
    if not sweepctl.exists():
        pytest.skip(f"no sweepctl console script beside {sys.executable} to stand in for /opt/sweepctl/bin/sweepctl")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/sweepctl/bin/sweepctl", str(sweepctl)))
    done = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")  # verify warns on stderr, exit 0
