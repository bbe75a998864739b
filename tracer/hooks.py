"""Runs inside the traced child process: turns ttnn's operation tracer on and gives every test
its own trace directory with a `_status.json`, so only traces of passed tests are harvested.

Loaded as a pytest plugin (`-p tracer.hooks`) or run as `python -m tracer.hooks SCRIPT [ARGS]`.
Environment: SWEEPCTL_TRACE_ROOT (where directories go), SWEEPCTL_TRACE_WITH_VALUES=1.
"""

from __future__ import annotations

import hashlib
import json
import os
import runpy
import sys
from typing import Any

import pytest

from tracer.capture import ROOT_ENV, VALUES_ENV
from tracer.optrace import STATUS_FILE


def test_dir(root: str, nodeid: str) -> str:
    return os.path.join(root, hashlib.sha256(nodeid.encode()).hexdigest()[:16])


def _enable_tracing() -> None:
    import ttnn.operation_tracer as tracer

    tracer.enable_tracing(True)
    tracer.enable_tensor_value_serialization(os.environ.get(VALUES_ENV) == "1")


def _write_status(directory: str, nodeid: str, status: str) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, STATUS_FILE), "w", encoding="utf-8") as handle:
        json.dump({"test_nodeid": nodeid, "status": status}, handle)


def pytest_configure(config: Any) -> None:
    _enable_tracing()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: Any, nextitem: Any):
    directory = test_dir(os.environ[ROOT_ENV], item.nodeid)
    os.environ["TTNN_OPERATION_TRACE_DIR"] = directory
    item.stash[_OUTCOMES] = []
    yield
    outcomes = item.stash[_OUTCOMES]
    status = "failed" if "failed" in outcomes else "skipped" if "skipped" in outcomes else "passed"
    _write_status(directory, item.nodeid, status)


_OUTCOMES = pytest.StashKey[list]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any):
    outcome = yield
    item.stash.setdefault(_OUTCOMES, []).append(outcome.get_result().outcome)


def main(argv: list[str]) -> int:
    """Script mode: the whole script is one "test"; it passed when it exits 0 without raising."""
    script = argv[0]
    directory = test_dir(os.environ[ROOT_ENV], script)
    os.environ["TTNN_OPERATION_TRACE_DIR"] = directory
    _enable_tracing()
    sys.argv = list(argv)
    status, code = "passed", 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        status = "passed" if code == 0 else "failed"
    except BaseException:
        status, code = "failed", 1
        _write_status(directory, script, status)
        raise
    _write_status(directory, script, status)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
