"""`sweepctl trace`: run a model test or script in a child process with ttnn's operation tracer
on, keep the traces of passed tests, and return them as store entries.

The tracer only fires with fast runtime mode off, so the child gets
TTNN_CONFIG_OVERRIDES={"enable_fast_runtime_mode": false}. ttnn prints a `Config{...}` line on
stdout at import; the child's output is relayed without it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from tracer.entry import TracedEntry
from tracer.errors import InputError
from tracer.optrace import STATUS_FILE, read_trace_dir

ROOT_ENV = "SWEEPCTL_TRACE_ROOT"
VALUES_ENV = "SWEEPCTL_TRACE_WITH_VALUES"

_TEST_FILE = re.compile(r"(^|/)(test_[^/]*|[^/]*_test)\.py$")


@dataclass
class CaptureResult:
    entries: list[TracedEntry] = field(default_factory=list)
    tests: dict[str, str] = field(default_factory=dict)  # nodeid -> passed/failed/skipped
    returncode: int = 0
    timed_out: bool = False  # the child's process group was killed at the timeout


def is_pytest_target(target: str) -> bool:
    return "::" in target or bool(_TEST_FILE.search(target.split("::")[0])) or os.path.isdir(target)


def child_env(with_values: bool, trace_root: str, extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})
    overrides = json.loads(env.get("TTNN_CONFIG_OVERRIDES") or "{}")
    overrides["enable_fast_runtime_mode"] = False
    env["TTNN_CONFIG_OVERRIDES"] = json.dumps(overrides)
    env[ROOT_ENV] = trace_root
    env[VALUES_ENV] = "1" if with_values else "0"
    return env


def _relay(stream: TextIO, sink: TextIO) -> None:
    for line in stream:
        if not line.startswith("Config{"):
            sink.write(line)


def _die_with_parent() -> Callable[[], None] | None:
    """For the child before exec: SIGKILL it when the process that started it dies (Linux), so a
    hung test never outlives a killed worker in its own session. Resolved here, in the parent:
    nothing is imported between fork and exec."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's session (it and anything it started), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def capture(
    target: str,
    machine_info: dict[str, Any] | None,
    with_values: bool = False,
    env_extra: dict[str, str] | None = None,
    trace_uid: str | None = None,
    output: TextIO = sys.stderr,
    timeout: float | None = None,
    cwd: str | None = None,
    pytest_args: list[str] | None = None,
) -> CaptureResult:
    """Run `target` (relative to `cwd`) under the tracer in a child process of its own session:
    past `timeout` s its whole process group is killed (a hung model test leaves nothing behind)."""
    path = target.split("::")[0]
    if not os.path.exists(os.path.join(cwd or ".", path)):
        raise InputError(path, "no such test file or script" + (f" under {cwd}" if cwd else ""))
    with tempfile.TemporaryDirectory(prefix="sweepctl-trace-") as root:
        if is_pytest_target(target):
            command = [sys.executable, "-m", "pytest", target, "-p", "tracer.hooks", "-q", "-p", "no:cacheprovider"]
            command += pytest_args or []
        else:
            command = [sys.executable, "-m", "tracer.hooks", target]
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=child_env(with_values, root, env_extra),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        assert proc.stdout is not None
        relay = threading.Thread(target=_relay, args=(proc.stdout, output), daemon=True)
        relay.start()
        result = CaptureResult()
        try:
            result.returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            result.timed_out = True
        finally:
            _kill_group(proc)
        relay.join(timeout=10)
        hf_model = (env_extra or {}).get("HF_MODEL") or os.environ.get("HF_MODEL")
        for name in sorted(os.listdir(root)):
            directory = os.path.join(root, name)
            status_path = os.path.join(directory, STATUS_FILE)
            if not os.path.exists(status_path):
                continue
            with open(status_path, encoding="utf-8") as handle:
                status = json.load(handle)
            nodeid = status["test_nodeid"]
            result.tests[nodeid] = status["status"]
            if status["status"] != "passed":
                continue
            source = f"{nodeid} [HF_MODEL:{hf_model}]" if hf_model else nodeid
            result.entries.extend(read_trace_dir(directory, source, machine_info, trace_uid, with_values))
    return result
