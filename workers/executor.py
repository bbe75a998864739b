"""The executor: the one process that owns the device (or the mock cluster) and runs vectors.

The worker daemon spawns it as a fresh interpreter in its own session (process group), so a hang
or a crash inside ttnn kills only the executor, and the daemon can kill its whole group. It keeps
the device open across vectors. Protocol over pipes: 4-byte big-endian length + msgpack; the
executor moves its stdout out of the way first, because ttnn prints to fd 1 at import.

  executor -> {"ready": true, "ttnn_version": ...} | {"ready": false, "error": ...}
  daemon   -> vector payload (the msgpack vector itself)
  executor -> outcome {"status", "pcc", "threshold", "message", "e2e_ms"}
            | {"not_started": true}: read after the daemon's start-by deadline (below), not run

Besides the pipes, the executor keeps a shared-memory cell (workers/stage.py) saying which vector it
works on and whether it is in the op call, in sweepctl's host work or moving tensors to or from the
device: when it dies or times out, that decides whether the vector is CRASH / HANG (the op), ERROR
(sweepctl) or INFRA (the device, or a vector it had not started). The daemon writes one word of it:
the wall-clock time after which no vector may start, because its lease may have lapsed meanwhile
(a daemon frozen with a vector waiting in this pipe); one read past it is answered NOT_STARTED.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from sweeps import status
from sweeps.profiles import get_profile
from workers import stage

_HEADER = struct.Struct(">I")
READY_TIMEOUT = 300.0
NOT_STARTED = "not_started"  # reply key: the vector was read after the daemon's start-by deadline, never begun


def write_frame(stream: BinaryIO, value: Any, raw: bool = False) -> None:
    body = value if raw else msgpack.packb(value, use_bin_type=True)
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: BinaryIO) -> bytes | None:
    """One frame, or None at EOF. Works on raw (unbuffered) pipes, where reads may come up short."""
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    return _read_exactly(stream, _HEADER.unpack(header)[0])


class ExecutorDied(Exception):
    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return f"exited with code {code}"


class Executor:
    """The daemon's handle on its executor: spawn, run one vector with a timeout, kill the group."""

    def __init__(self, machine: str, backend: str, devices: list[int], log: BinaryIO | None = None) -> None:
        self.machine = machine
        self.backend = backend
        self.devices = devices
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.ttnn_version = ""
        self._buf = bytearray()  # bytes read from the executor, not yet a whole frame
        self.cell = stage.Cell.create()  # where the executor is (workers/stage.py); one for every respawn
        self.answered = 0  # outcomes read from this executor: the head vector is answered + 1
        self.ended = "not started"  # how the last executor ended

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.backend == "emulated":
            env["TT_METAL_MOCK_CLUSTER_DESC_PATH"] = get_profile(self.machine).mock_cluster_path
        elif self.devices:
            env["TT_VISIBLE_DEVICES"] = ",".join(map(str, self.devices))
        return env

    def start(self) -> None:
        """Spawn and wait until the backend is open; raises ExecutorDied when it cannot open."""
        self.cell.write(0, stage.IDLE)
        self.answered = 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers.executor", self.machine, self.backend, str(self.cell.fd)],
            bufsize=0,  # select() must see every frame: no Python buffer may hide one
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log if self.log is not None else subprocess.DEVNULL,
            env=self.env(),
            start_new_session=True,
            pass_fds=(self.cell.fd,),
        )
        reply = self._read(READY_TIMEOUT)
        if reply is None:
            died = self.kill()
            raise ExecutorDied(f"executor did not start: {died}")
        hello = msgpack.unpackb(reply, raw=False)
        if not hello.get("ready"):
            self.kill()
            raise ExecutorDied(f"backend {self.backend} could not open: {hello.get('error')}")
        self.ttnn_version = hello.get("ttnn_version", "")

    @property
    def alive(self) -> bool:
        """Started and not known dead (a death shows as EOF on its pipe; no syscall per vector)."""
        return self.proc is not None and self.proc.returncode is None

    def polled_alive(self) -> bool:
        """Alive, asking the OS (one waitpid): before a vector goes to an idle executor, so one that
        died between vectors is reopened (after a reset) instead of taking the vector down with it."""
        return self.proc is not None and self.proc.poll() is None

    def _read(self, timeout: float) -> bytes | None:
        """The next frame within `timeout` s, or None (timeout or EOF). Reads whatever the pipe
        holds at once and keeps the rest, so two queued replies cost one read."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            if len(self._buf) >= _HEADER.size:
                end = _HEADER.size + _HEADER.unpack_from(self._buf)[0]
                if len(self._buf) >= end:
                    frame, self._buf = bytes(self._buf[_HEADER.size : end]), self._buf[end:]
                    return frame
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._buf += chunk

    def send(self, payload: bytes) -> bool:
        """Queue a vector in the executor's pipe (it runs vectors in order); False if it is gone."""
        if not self.alive:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            write_frame(self.proc.stdin, payload, raw=True)
        except BrokenPipeError:
            return False
        return True

    def receive(self, timeout: float, limit: float | None = None) -> dict[str, Any]:
        """The outcome of the oldest vector sent, or {NOT_STARTED: True} when the executor read it
        past its start-by deadline (workers/stage.py) and did not run it. When none comes within
        `timeout` s the executor's group is killed; when the executor dies, it is gone too. Then its
        cell says whose fault that was (workers/stage.py): HANG / CRASH inside the op call only,
        ERROR in sweepctl's host work, INFRA moving tensors to or from the device or before it
        started the vector. `limit` is the vector's whole timeout, for the message (`timeout` may
        be what is left)."""
        deadline = time.monotonic() + timeout
        reply = self._read(max(0.0, timeout)) if self.alive else None
        if reply is None:
            if self.proc is not None and self.proc.poll() is None and time.monotonic() >= deadline - 0.01:
                self.kill()
                return stage.timed_out(self.cell.read(), self.answered + 1, timeout if limit is None else limit)
            return self._died()
        self.answered += 1
        return msgpack.unpackb(reply, raw=False)

    def run(self, payload: bytes, timeout: float) -> dict[str, Any]:
        """The outcome of one vector (send, then receive)."""
        return self.receive(timeout) if self.send(payload) else self._died()

    def _died(self) -> dict[str, Any]:
        """The head vector's outcome when the executor is dead (killed now, or found dead before)."""
        how = self.kill()
        return stage.died(self.cell.read(), self.answered + 1, how)

    def kill_group(self) -> None:
        """Kill the executor's process group from another thread; the daemon sees EOF and books it."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def kill(self) -> str:
        """Kill the executor's whole process group; returns how it ended (the last one's, when none runs)."""
        if self.proc is None:
            return self.ended
        proc, self.proc = self.proc, None
        self._buf = bytearray()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        self.ended = describe_exit(proc.returncode)
        return self.ended

    def stop(self) -> None:
        """Close stdin so the executor exits cleanly, then make sure its group is gone."""
        if self.proc is None:
            return
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=get_profile(self.machine).close_timeout)  # closing a 32-chip mesh takes a while
        except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
            pass
        self.kill()


def enter_workdir(owner: int) -> str:
    """Move into a working directory of this process's own, under `owner`'s (an executor's daemon,
    or this process) in the cache dir, removed at a clean exit: ttnn writes generated/fabric/*.yaml
    into the working directory when it opens a mesh, and executors must neither overwrite each
    other's nor litter the directory a worker started in. Its own, not the owner's: a process whose
    directory is removed under it (a sibling executor of the same owner exiting) cannot even import
    torch (oneMKL: "Cannot load libtorch_cpu.so", from a failing getcwd). What executors killed
    before left behind goes when the next one of that owner starts."""
    import atexit
    import shutil

    from sweeps.index import cache_dir

    home = cache_dir() / "workdirs" / str(owner)
    path = home / str(os.getpid())
    path.mkdir(parents=True, exist_ok=True)
    for left in home.iterdir():  # of executors killed (SIGKILL runs no atexit)
        if left != path and left.name.isdigit() and not _alive(int(left.name)):
            shutil.rmtree(left, True)
    atexit.register(_remove, path)
    os.chdir(path)
    return str(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    return True


def _remove(path: Path) -> None:
    """This process's directory, then its owner's if no other process of it has one there."""
    import shutil

    shutil.rmtree(path, True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def isolate_stdout() -> BinaryIO:
    """Point fd 1 at stderr (ttnn's C++ logger and its import-time prints write to fd 1) and return
    the original stdout, which then carries only our own output."""
    ours = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    return ours


def open_backend(machine: str, backend: str) -> Any:
    """Import ttnn (its Config{...} print kept off stdout) and open the backend; raises when the
    device cannot be opened."""
    with contextlib.redirect_stdout(sys.stderr):
        import ttnn
    if backend == "emulated":
        from workers.emulated import EmulatedBackend

        return EmulatedBackend(ttnn, machine)
    from workers.device import DeviceBackend

    return DeviceBackend(ttnn, get_profile(machine))


def _watch_parent(interval: float = 1.0) -> None:
    """If the daemon dies without killing us (SIGKILL, cold shutdown), kill our own group: an
    executor stuck in a hung op must not outlive its worker."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def serve(machine: str, backend_name: str, cell_fd: int | None = None) -> int:
    """Executor main loop: one outcome frame per vector frame, until stdin closes. `cell_fd` is the
    daemon's stage cell (workers/stage.py), told which vector runs and in which stage."""
    if cell_fd is not None:
        stage.attach(cell_fd)
    _watch_parent()
    enter_workdir(os.getppid())
    proto_out = isolate_stdout()  # ttnn's prints and any stray output go to the log, not the protocol
    proto_in = os.fdopen(os.dup(0), "rb")  # buffered: a frame's header and body in one read
    from sweeps.vector import VectorError, decode

    try:
        backend = open_backend(machine, backend_name)
    except Exception as exc:  # device open failed: the daemon books INFRA, never an op failure
        write_frame(proto_out, {"ready": False, "error": f"{type(exc).__name__}: {exc}"[:1000]})
        return 1
    import gc
    import importlib.metadata

    gc.freeze()  # ttnn, torch and the backend are long-lived: keep the collector off them
    write_frame(proto_out, {"ready": True, "ttnn_version": importlib.metadata.version("ttnn")})
    seq = 0
    while True:
        payload = read_frame(proto_in)
        if payload is None:
            getattr(backend, "close", lambda: None)()
            return 0
        seq += 1
        if not stage.may_start():  # the daemon may have lost this vector's lease meanwhile
            write_frame(proto_out, {NOT_STARTED: True})
            continue
        stage.begin(seq)
        try:
            vector = decode(payload)
        except VectorError as exc:
            write_frame(proto_out, {"status": status.INFRA, "message": str(exc)})
            continue
        write_frame(proto_out, run_vector(backend, vector))
        if getattr(backend, "broken", False):  # the mesh could not be reopened: the daemon resets and respawns
            return 1


def run_vector(backend: Any, vector: dict[str, Any]) -> dict[str, Any]:
    """One vector's outcome on an open backend (the executor's loop, and `sweepctl run`)."""
    from sweeps.catalogue import lookup, no_definition_reason
    from workers.outcome import our_error
    from workers.testops import run_test_op

    opdef = lookup(vector["op"])
    if opdef is None:
        return {"status": status.NOT_RUN, "message": no_definition_reason(vector["op"])}
    if opdef.test_only:
        return run_test_op(opdef, vector)
    try:
        return backend.run(opdef, vector)
    except Exception as exc:  # backends classify their own; whatever escapes is sweepctl's
        return our_error(exc)


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None))
