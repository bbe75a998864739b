"""The embedded default: a local redis-server and emulated workers the tool starts and owns.

`sweepctl up` starts redis-server from PATH on 127.0.0.1 and a free port, with its data in a
state directory the tool owns (`$SWEEPCTL_HOME`, default `~/.local/state/sweepctl`), then one
emulated worker per machine type asked for; `state.json` there records what was started, so
`sweepctl down` stops exactly that and nothing else, and other commands find the Redis without
flags. `--redis URL` / `SWEEPCTL_REDIS_URL` point every command at a real deployment instead.

The embedded Redis has one identity, its port and data dir, fixed by the first `up`: an `up` after
it died restarts it there (its AOF loads, and the workers that kept retrying that port reconnect),
and one restarted by hand on that port with that dir is adopted. Every process `up` starts is
recorded by pid, start time and boot id, and is signalled only while the pid is still that
process, so a reused pid is never killed. `down` deletes the state only once all of them are gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tracer.errors import InputError

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
_STATE_KEYS = ("url", "port", "dir", "prefix", "redis", "workers")


def home() -> Path:
    root = os.environ.get("SWEEPCTL_HOME") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "sweepctl"
    )
    return Path(root)


def read_state() -> dict[str, Any] | None:
    """What `up` started here (whether or not it still runs); None when it started nothing or its
    state cannot be read (`up` and `down` say why: _owned_state)."""
    try:
        return _owned_state()
    except InputError:
        return None


def _owned_state() -> dict[str, Any] | None:
    path = home() / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InputError(str(path), f"unreadable ({exc}): stop what it lists by hand, then delete it") from None
    if not isinstance(state, dict) or any(key not in state for key in _STATE_KEYS):
        raise InputError(
            str(path), "written by an older sweepctl (no process identities): stop its redis-server and workers "
            "by hand, then delete it",
        )  # fmt: skip
    return state


def _write_state(state: dict[str, Any]) -> None:
    path = home() / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One `up` or `down` of a home at a time."""
    root = home()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# --- process identity (Linux /proc) ---------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat from its third field on (state, ppid, ...; the name before may hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def identify(pid: int) -> dict[str, Any] | None:
    """pid, start time (clock ticks after boot) and boot id: this process and no later one with its pid."""
    fields = _stat(pid)
    if fields is None or fields[0] == "Z":  # a zombie has exited
        return None
    return {"pid": pid, "start": int(fields[19]), "boot": _boot_id()}


def is_running(proc: dict[str, Any] | None) -> bool:
    """The recorded process still runs: same pid, same start time, same boot."""
    if not proc or not isinstance(proc.get("pid"), int):
        return False
    now = identify(proc["pid"])
    return now is not None and now["start"] == proc.get("start") and now["boot"] == proc.get("boot")


def _children(pid: int) -> list[dict[str, Any]]:
    """The running children of a process (a worker's executor runs in a session of its own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                child = identify(int(entry.name))
                if child is not None:
                    found.append(child)
    return found


def _signal(proc: dict[str, Any], sig: signal.Signals, group: bool) -> None:
    if not is_running(proc):
        return
    try:
        if group:  # a worker or an executor: the session we gave it, with whatever it forked
            os.killpg(proc["pid"], sig)
        else:
            os.kill(proc["pid"], sig)
    except ProcessLookupError:
        pass


def _stop(procs: list[dict[str, Any]], timeout: float, group: bool = True) -> None:
    """SIGTERM, up to `timeout` s for them to finish, then SIGKILL what is left."""
    for proc in procs:
        _signal(proc, signal.SIGTERM, group)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(is_running(p) for p in procs):
        time.sleep(0.1)
    for proc in procs:
        _signal(proc, signal.SIGKILL, group)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(is_running(p) for p in procs):
        time.sleep(0.05)


def resolve_url(explicit: str | None) -> str:
    """--redis, then SWEEPCTL_REDIS_URL, then the embedded Redis of `sweepctl up`."""
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
    deadline = time.monotonic() + 120  # a restart replays its AOF before it answers
    while time.monotonic() < deadline and proc.poll() is None:
        if _probe(port, lambda client: client.ping()):  # PING fails while it loads
            return proc, url
        time.sleep(0.05)
    proc.kill()
    raise InputError("sweepctl up", f"redis-server did not start on port {port} (see {directory / 'redis.log'})")


def start_worker(
    url: str,
    machine: str,
    name: str,
    logs: Path,
    prefix: str,
    env_extra: dict[str, str] | None = None,
    events: bool = False,
):
    logs.mkdir(parents=True, exist_ok=True)
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    env = {**os.environ, "SWEEPCTL_EXECUTOR_LOG": str(logs / f"{name}.executor.log"), **(env_extra or {})}
    cmd = [sys.executable, "-m", "broker.cli", "worker", "--machine", machine, "--backend", "emulated"]
    cmd += ["--name", name, "--redis", url, "--prefix", prefix] + (["--events"] if events else [])
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)
    log.close()
    return proc


def _probe(port: int, ask: Any) -> Any:
    """`ask(client)` of whatever answers on this loopback port, asked once (no retries); None on failure."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=2, socket_timeout=5, retry=Retry(NoBackoff(), 0)
    )
    try:
        return ask(client)
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None
    finally:
        client.close()


def _answering(port: int) -> tuple[int, str] | None:
    """The pid and data dir of a redis-server answering on this loopback port (even while it loads)."""
    return _probe(port, lambda c: (int(c.info("server")["process_id"]), str(c.config_get("dir")["dir"])))


def _same_dir(directory: str, state: dict[str, Any]) -> bool:
    return os.path.realpath(directory) == os.path.realpath(state["dir"])


def _redis_process(state: dict[str, Any]) -> dict[str, Any] | None:
    """The embedded Redis running now: the one `up` recorded, or one restarted by hand on its port
    with its data dir (adopted: recorded in the state). None when neither runs."""
    if is_running(state["redis"]):
        return state["redis"]
    return _adopt(state, _answering(state["port"]))


def _adopt(state: dict[str, Any], found: tuple[int, str] | None) -> dict[str, Any] | None:
    """The process of `found` (what answered on the state's port) when it is a redis-server of the
    state's data dir, recorded in the state; else None."""
    if found is None or not _same_dir(found[1], state):
        return None
    proc = identify(found[0])  # None when that pid is not visible here (another pid namespace)
    if proc is not None:
        state["redis"] = proc
    return proc


def up(machines: list[str], per_machine: int, prefix: str, events: bool = False) -> tuple[dict[str, Any], Any]:
    """Start (or reuse, or restart on its own port and data dir) the embedded Redis, then the
    workers asked for that are not running yet, each under a name no live worker holds (with
    `events`, those new workers send task events and heartbeats for Flower). Returns what runs and
    the client that found the Redis answering (the caller asks it no second time)."""
    from broker.keys import Keys
    from broker.registry import live_names

    with _locked():
        state = _owned_state()
        new = state is None
        if state is None:
            port = free_port()
            state = {"url": f"redis://127.0.0.1:{port}/0", "port": port, "dir": str(home() / "redis"),
                     "prefix": prefix, "redis": None, "workers": []}  # fmt: skip
        restarted = False
        if not is_running(state["redis"]):
            found = _answering(state["port"])  # asked once: a port that does not answer costs its timeout
            if _adopt(state, found) is None:
                if found is None and _port_free(state["port"]):
                    proc, _ = start_redis(Path(state["dir"]), state["port"])
                    state["redis"] = identify(proc.pid)
                    restarted = not new
                elif found is None or not _same_dir(found[1], state):
                    what = "does not answer as Redis" if found is None else f"is not the redis-server of {state['dir']}"
                    raise InputError(
                        f"sweepctl up: 127.0.0.1:{state['port']}",
                        f"the embedded Redis's port is taken by another process, which {what}: free it, or "
                        "`sweepctl down` and `sweepctl up` for a new one",
                    )
        _write_state(state)
        client, keys = connect(state["url"]), Keys(state["prefix"])
        running = [w for w in state["workers"] if is_running(w)]
        taken = live_names(client, keys) | {w["name"] for w in running}
        started: list[dict[str, Any]] = []
        for machine in machines:
            missing = per_machine - sum(1 for w in running if w["machine"] == machine)
            for name in _free_names(machine, missing, taken):
                proc = start_worker(state["url"], machine, name, home() / "logs", state["prefix"], events=events)
                started.append({**(identify(proc.pid) or {"pid": proc.pid}), "machine": machine, "name": name})
                state["workers"] = running + started
                _write_state(state)  # recorded as soon as it runs: a crash of `up` loses no process
        state["workers"] = running + started
        _write_state(state)
    return {**state, "started": started, "redis_restarted": restarted}, client


def _port_free(port: int) -> bool:
    """Nothing listens on it (connections of a dead server lingering in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_names(machine: str, count: int, taken: set[str]) -> list[str]:
    """The lowest-numbered `emu-MACHINE-N@host` names not taken (added to `taken`)."""
    names, index = [], 0
    while len(names) < count:
        name = f"emu-{machine}-{index}@{socket.gethostname()}"
        if name not in taken:
            taken.add(name)
            names.append(name)
        index += 1
    return names


def down(timeout: float = 30.0) -> dict[str, Any]:
    """Stop every process `up` started here that still runs, verified by pid and start time: the
    workers (warm: a running vector finishes, SIGKILL after `timeout` s) with their executors, then
    the Redis, even one restarted by hand on its port. The state is deleted only once all are gone."""
    with _locked():
        state = _owned_state()
        if state is None:
            return {"state": False, "stopped": [], "redis": None, "left": []}
        workers = [w for w in state["workers"] if is_running(w)]
        executors = [child for w in workers for child in _children(w["pid"])]
        _stop(workers, timeout)
        _stop(executors, 10)
        redis_proc = _redis_process(state)
        if redis_proc is not None:
            _stop([redis_proc], 30, group=False)
        left = [p["pid"] for p in [*workers, *executors, redis_proc] if p is not None and is_running(p)]
        if left:
            _write_state(state)
        else:
            (home() / STATE_FILE).unlink(missing_ok=True)
        return {
            "state": True,
            "stopped": [w["name"] for w in workers],
            "redis": state["url"] if redis_proc is not None else None,
            "left": left,
        }


def wait_for_workers(client: Any, keys: Any, started: list[dict[str, Any]], timeout: float = 180.0) -> list[str]:
    """Names of the workers just started whose executor opened (health GOOD) within the timeout;
    a worker that exited (its name refused, say) is not waited for."""
    pending = {w["name"]: w for w in started}
    ready = set()
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name, worker in list(pending.items()):
            health, pid = client.hmget(keys.worker(name), "health", "pid")
            if pid == str(worker["pid"]).encode() and health in (b"GOOD", b"BAD"):
                del pending[name]
                if health == b"GOOD":
                    ready.add(name)
            elif not is_running(worker):
                del pending[name]
        time.sleep(0.2)
    return [w["name"] for w in started if w["name"] in ready]
