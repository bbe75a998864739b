"""The embedded default: a local redis-server and emulated workers the tool starts and owns.

`sweepctl up` starts redis-server from PATH on 127.0.0.1 and a free port, with its data in a
state directory the tool owns (`$SWEEPCTL_HOME`, default `~/.local/state/sweepctl`), then one
emulated worker per machine type asked for; `state.json` there records what was started, so
`sweepctl down` stops exactly that and nothing else, and other commands find the Redis without
flags. `--redis URL` / `SWEEPCTL_REDIS_URL` point every command at a real deployment instead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tracer.errors import InputError

STATE_FILE = "state.json"


def home() -> Path:
    root = os.environ.get("SWEEPCTL_HOME") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "sweepctl"
    )
    return Path(root)


def read_state() -> dict[str, Any] | None:
    path = home() / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return state if _alive(state.get("redis_pid")) else None


def _write_state(state: dict[str, Any]) -> None:
    path = home() / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def resolve_url(explicit: str | None) -> str:
    """--redis, then SWEEPCTL_REDIS_URL, then the embedded Redis `sweepctl up` started."""
    url = explicit or os.environ.get("SWEEPCTL_REDIS_URL")
    if url:
        return url
    state = read_state()
    if state is None:
        raise InputError(
            "redis", "no Redis to talk to: run `sweepctl up`, or pass --redis URL / set SWEEPCTL_REDIS_URL"
        )
    return state["url"]


URL_FORM = "redis://[user:password@]host[:port][/db], rediss:// for TLS, or unix:///path/to/redis.sock[?db=N]"


def check_url(url: str) -> None:
    """One clear line for a Redis URL that cannot be right, before anything connects (redis-py
    would raise a traceback, or quietly use DB 0 for `/abc`)."""
    from urllib.parse import parse_qs, urlsplit

    where = f"redis URL {_safe(url)!r}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InputError(where, f"{exc} (expected {URL_FORM})") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise InputError(where, f"not a Redis URL (expected {URL_FORM})")
    if parts.scheme == "unix":
        db, path = parse_qs(parts.query).get("db", ["0"])[-1], parts.path
        if not path:
            raise InputError(where, f"no socket path (expected {URL_FORM})")
    else:
        db = parts.path.strip("/") or parse_qs(parts.query).get("db", ["0"])[-1]
        if not parts.hostname:
            raise InputError(where, f"no host (expected {URL_FORM})")
        if port == 0:
            raise InputError(where, "port 0 is not a port Redis listens on")
    if not db.isdigit():
        raise InputError(where, f"database {db!r} is not a number (expected {URL_FORM})")


def connect(url: str) -> Any:
    """A Redis client that answered PING, or one clear line saying what is wrong."""
    import redis

    check_url(url)
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=30, health_check_interval=30)
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise InputError(f"redis {_safe(url)}", f"authentication failed ({exc})") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise InputError(f"redis {_safe(url)}", f"does not answer ({exc})") from None
    except redis.ResponseError as exc:  # e.g. SELECT of a database the server does not have
        raise InputError(f"redis {_safe(url)}", f"refused the connection: {exc}") from None
    return client


def _safe(url: str) -> str:
    """A URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a reaped zombie of ours still answers kill(0); its /proc stat says Z
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def start_redis(directory: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    server = shutil.which("redis-server")
    if server is None:
        raise InputError("sweepctl up", "redis-server is not on PATH (Debian: apt-get install redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    proc = subprocess.Popen(
        [
            server,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(directory),
            "--save", "",
            "--appendonly", "yes",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(directory / "redis.log"),
            "--daemonize", "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            connect(url)
            return proc, url
        except InputError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    raise InputError("sweepctl up", f"redis-server did not start on port {port} (see {directory / 'redis.log'})")


def start_worker(url: str, machine: str, name: str, logs: Path, prefix: str, env_extra: dict[str, str] | None = None):
    logs.mkdir(parents=True, exist_ok=True)
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    env = {**os.environ, "SWEEPCTL_EXECUTOR_LOG": str(logs / f"{name}.executor.log"), **(env_extra or {})}
    cmd = [sys.executable, "-m", "broker.cli", "worker", "--machine", machine, "--backend", "emulated"]
    cmd += ["--name", name, "--redis", url, "--prefix", prefix]
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)
    log.close()
    return proc


def up(machines: list[str], per_machine: int, prefix: str) -> dict[str, Any]:
    """Start (or reuse) the embedded Redis and start the workers asked for."""
    root = home()
    root.mkdir(parents=True, exist_ok=True)
    state = read_state()
    if state is None:
        proc, url = start_redis(root / "redis")
        state = {"url": url, "redis_pid": proc.pid, "prefix": prefix, "workers": []}
    running = [w for w in state["workers"] if _alive(w["pid"])]
    started = []
    for machine in machines:
        have = sum(1 for w in running if w["machine"] == machine)
        for index in range(have, per_machine):
            name = f"emu-{machine}-{index}@{socket.gethostname()}"
            proc = start_worker(state["url"], machine, name, root / "logs", state.get("prefix", prefix))
            started.append({"pid": proc.pid, "machine": machine, "name": name})
    state["workers"] = running + started
    _write_state(state)
    return {**state, "started": started}


def _stop(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # the worker and its executor share the session we gave them
    except ProcessLookupError:
        pass


def down(timeout: float = 30.0) -> dict[str, Any]:
    """Stop the workers (warm: a running vector finishes), then the Redis this tool started."""
    state = read_state()
    path = home() / STATE_FILE
    if state is None:
        path.unlink(missing_ok=True)
        return {"stopped": [], "redis": None}
    workers = [w for w in state["workers"] if _alive(w["pid"])]
    for worker in workers:
        _stop(worker["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(w["pid"]) for w in workers):
        time.sleep(0.1)
    for worker in workers:
        if _alive(worker["pid"]):
            _stop(worker["pid"], signal.SIGKILL)
    _stop(state["redis_pid"], signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(state["redis_pid"]):
        time.sleep(0.05)
    path.unlink(missing_ok=True)
    return {"stopped": [w["name"] for w in workers], "redis": state["url"]}


def wait_for_workers(client: Any, keys: Any, names: list[str], timeout: float = 180.0) -> list[str]:
    """Names of the given workers whose executor opened (health GOOD) within the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        healths = {n: client.hget(keys.worker(n), "health") for n in names}
        if all(h in (b"GOOD", b"BAD") for h in healths.values()):
            break
        time.sleep(0.2)
    return [n for n in names if client.hget(keys.worker(n), "health") == b"GOOD"]
