"""Exports of a run, one row per vector: CSV for spreadsheets, JUnit XML for CI, and tt-metal's
OpRun/OpTest JSON (field names, status strings and metric names as tt-metal's sweeps result
destination writes them, anchor study §2.4) so their Superset import keeps working.

With expectations, XFAIL and XPASS replace the raw verdict where tt-metal has them (JUnit:
an XFAIL is skipped, an XPASS passes). ERROR, sweepctl's own failure, is a JUnit <error> (a harness
error, not the test's <failure>) and OpTest "error", the status tt-metal's exporter writes for
anything that is not a verdict on the op.

OpRun/OpTest validate against tt-metal's pydantic models (infra/data_collection): statuses map as
its `_map_status` maps them (its TestStatus has no xfail/xpass, so those end as "error" there and
here); `message` is the bare PCC, `metrics` null when there are none, `op_params_set` the
flattened vector tt-metal's loader generates (input_a_shape, …, traced_source), `card_type` the
traced machine's, git facts "unknown" when not found. An unfinished run's pending vectors are
left out (no timestamps to give) and the run is did_not_finish.

JUnit text is made XML 1.0-safe: ttnn messages carry ANSI colour escapes and other control
characters, which XML forbids even escaped; escapes are stripped, other forbidden characters are
written as visible `\\xNN` text.
"""

from __future__ import annotations

import csv
import datetime as _dt
import getpass
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import time
from typing import Any
from xml.etree import ElementTree as ET

from broker.reports.expectations import EXCLUDED, FAIL, XFAIL, XPASS, Expectations
from broker.reports.rows import PENDING, Row
from sweeps import catalogue, status
from sweeps.profiles import PROFILES
from tracer.args import is_unparsed
from tracer.dialect import render_memory_config

FORMATS = ("json", "csv", "junit", "html", "optest")
UNKNOWN = "unknown"  # what tt-metal writes for git facts and card types it cannot find
CSV_FIELDS = (
    "vector", "op", "machine", "suite", "config_hash", "models", "status", "verdict", "pcc", "threshold",
    "e2e_ms", "elements", "signature", "message", "backend", "worker", "attempt",
)  # fmt: skip

# sweepctl status -> tt-metal's exported status string (result_destination._map_status)
OPTEST_STATUS = {
    status.ERROR: "error",
    status.PASS: "pass",
    status.FAIL_ACCURACY: "fail_assert_exception",
    status.FAIL_OP: "fail_assert_exception",
    status.FAIL_L1_OOM: "fail_l1_out_of_mem",
    status.HANG: "fail_crash_hang",
    status.CRASH: "fail_crash_hang",
    status.INVALID: "skipped",
    status.NOT_RUN: "skipped",
    status.EXPIRED: "skipped",
    status.CANCELED: "skipped",
    status.REUSED: "skipped",  # not run in this run: its verdict is the base run's PASS
    status.INFRA: "error",
    XFAIL: "error",  # tt-metal maps it to "xfail", which its TestStatus rejects: its fallback is "error"
    XPASS: "error",  # likewise "xpass"
}


def _verdicts(rows: list[Row], expectations: Expectations | None) -> list[str]:
    if expectations is None:
        return [row.status for row in rows]
    return [expectations.judge(row)[0] for row in rows]


def to_csv(rows: list[Row], expectations: Expectations | None = None) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row, verdict in zip(rows, _verdicts(rows, expectations), strict=True):
        record, vector = row.record, row.vector
        writer.writerow(
            {
                "vector": row.id,
                "op": vector["op"],
                "machine": vector["machine"],
                "suite": vector["suite"],
                "config_hash": vector.get("config_hash") or "",
                "models": ";".join(row.models),
                "status": row.status,
                "verdict": verdict,
                "pcc": "" if row.pcc is None else repr(row.pcc),
                "threshold": record.get("threshold", ""),
                "e2e_ms": "" if row.e2e_ms is None else repr(row.e2e_ms),
                "elements": row.elements,
                "signature": record.get("signature", ""),
                "message": record.get("message", ""),
                "backend": record.get("backend", ""),
                "worker": record.get("worker", ""),
                "attempt": record.get("attempt", ""),
            }
        )
    return out.getvalue()


# ECMA-48 escape sequences: CSI (colours, cursor), OSC (titles, links), and the two-byte and nF forms
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[ -/]*[0-~])")
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """`text` as XML 1.0 can hold it: ANSI escape sequences removed, every other character XML
    forbids (NUL, other C0 controls, lone surrogates, U+FFFE/U+FFFF) written as `\\xNN` / `\\uNNNN`."""
    text = _ANSI.sub("", text)
    return _NOT_XML.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


def to_junit(run_id: str, rows: list[Row], expectations: Expectations | None = None) -> str:
    """One testsuite per op, one testcase per vector. Failures are executed failures that count
    (unexpected ones under expectations); ERROR (sweepctl's own) and INFRA are errors; what never
    ran is skipped."""
    suites: dict[str, list[tuple[Row, str]]] = {}
    for row, verdict in zip(rows, _verdicts(rows, expectations), strict=True):
        suites.setdefault(row.vector["op"], []).append((row, verdict))
    root = ET.Element("testsuites", name=f"sweepctl {run_id}")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for op, items in suites.items():
        suite = ET.SubElement(root, "testsuite", name=op)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        seconds = 0.0
        for row, verdict in items:
            case = ET.SubElement(
                suite, "testcase", classname=f"{op}.{row.vector['machine']}", name=_case_name(row),
                time=f"{(row.e2e_ms or 0.0) / 1000.0:.6f}",
            )  # fmt: skip
            seconds += (row.e2e_ms or 0.0) / 1000.0
            message = xml_safe(row.record.get("message", ""))
            counts["tests"] += 1
            if verdict == FAIL or (expectations is None and verdict in status.FAILED):
                ET.SubElement(case, "failure", message=message[:500], type=row.status).text = message
                counts["failures"] += 1
            elif verdict in (status.ERROR, status.INFRA):
                ET.SubElement(case, "error", message=message[:500], type=verdict).text = message
                counts["errors"] += 1
            elif verdict in (XFAIL, EXCLUDED, PENDING) or not (status.is_executed(verdict) or verdict == XPASS):
                ET.SubElement(case, "skipped", message=f"{verdict}: {message}"[:500])
                counts["skipped"] += 1
            if row.pcc is not None:
                ET.SubElement(case, "system-out").text = f"pcc={row.pcc!r} backend={row.record.get('backend', '')}"
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("time", f"{seconds:.6f}")
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _case_name(row: Row) -> str:
    tail = f" [{row.vector['config_hash'][:16]}]" if row.vector.get("config_hash") else ""
    return xml_safe(f"{row.id}{tail}")


def _sweep_name(vector: dict[str, Any]) -> str:
    """tt-metal's module naming: model_traced.<op>_model_traced for traced suites, else family.op."""
    short = vector["op"].split(".")[-1]
    if vector["suite"] == "model_traced":
        return f"model_traced.{short}_model_traced"
    opdef = catalogue.lookup(vector["op"])
    return f"{opdef.family if opdef else 'unknown'}.{short}"


def card_type(machine_info: dict[str, Any] | None) -> str:
    """tt-metal's card type of the traced machine: `Wormhole tt-galaxy-wh (32 cards)`; "n/a" unknown."""
    info = machine_info or {}
    board, series, cards = info.get("board_type"), info.get("device_series"), info.get("card_count")
    if not (board and series):
        return "n/a"
    return f"{board} {series}" + (f" ({cards} {'card' if cards == 1 else 'cards'})" if cards else "")


def _ts(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc).isoformat()


def _placement(placement: dict[str, Any] | None) -> dict[str, str] | None:
    """A canonical placement in the strings tt-metal's traces hold."""
    if not placement:
        return None
    names = [
        f"PlacementShard({name[6:-1]})" if name.startswith("shard(") else "PlacementReplicate"
        for name in placement.get("placements") or []
    ]
    return {
        "placement": str(names),
        "distribution_shape": str(placement.get("distribution_shape")),
        "mesh_device_shape": str(placement.get("mesh_shape")),
    }


def _memory_config(mc: Any) -> Any:
    if is_unparsed(mc):
        return mc["unparsed"]
    return render_memory_config(mc) if mc is not None else None


def _traced_value(value: Any) -> Any:
    """A canonical non-tensor argument the way tt-metal's generated vector spells it."""
    if is_unparsed(value):
        return value["unparsed"]
    if isinstance(value, list):
        return [_traced_value(item) for item in value]
    if isinstance(value, dict):
        if "enum" in value:
            return f"{value['enum']}.{_traced_value(value['value'])}"
        if "memory_config" in value and len(value) == 1:
            return _memory_config(value["memory_config"])
        return {key: _traced_value(item) for key, item in value.items()}
    return value


def _tensor_fields(prefix: str, tensor: dict[str, Any]) -> dict[str, Any]:
    shape, dtype, layout = tensor["shape"], tensor["dtype"], tensor["layout"]
    return {
        f"{prefix}_shape": shape["unparsed"] if is_unparsed(shape) else shape,
        f"{prefix}_dtype": dtype["unparsed"] if is_unparsed(dtype) else f"DataType.{dtype}",
        f"{prefix}_layout": layout["unparsed"] if is_unparsed(layout) else f"Layout.{layout}",
        f"{prefix}_memory_config": _memory_config(tensor["memory_config"]),
        f"{prefix}_tensor_placement": _placement(tensor.get("placement")),
    }


def generated_vector(vector: dict[str, Any]) -> dict[str, Any]:
    """The vector tt-metal's loader (master_config_loader_v2) generates from the same config, with
    its keys: positional tensors as input_a_*, input_b_*…, named tensors as <name>_*, other
    arguments by name, output_memory_config, traced_source, traced_machine_info, config_hash."""
    out: dict[str, Any] = {}
    tensors = []
    for index, value in enumerate(vector["inputs"]):
        if isinstance(value, dict) and "tensor" in value:
            tensors.append(value["tensor"])
        else:
            out[f"arg{index}"] = _traced_value(value)
    for name, value in vector["kwargs"].items():
        if isinstance(value, dict) and "tensor" in value:
            out.update(_tensor_fields(name, value["tensor"]))
        else:
            out[name] = _traced_value(value)
    for index, tensor in enumerate(tensors):
        prefix = f"input_{chr(97 + index)}"
        out.update(_tensor_fields(prefix, tensor))
        if tensor.get("storage") and "HOST" in tensor["storage"]:
            out[f"{prefix}_storage_type"] = f"StorageType.{tensor['storage']}"
    if tensors and "output_memory_config" not in out:
        out["output_memory_config"] = out["memory_config"] if "memory_config" in out else out["input_a_memory_config"]
    sources = vector.get("sources") or []
    out["traced_source"] = sources[0] if len(sources) == 1 else sources
    out["traced_machine_info"] = vector.get("traced_machine")
    out["config_hash"] = vector.get("config_hash")
    return out


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested maps to dotted keys, lists kept whole (tt-metal's _flatten_any_to_dotted)."""
    if isinstance(value, dict):
        return [item for key, v in value.items() for item in _flatten(v, f"{prefix}.{key}" if prefix else key)]
    return [(prefix, value)]


def op_params(vector: dict[str, Any]) -> list[dict[str, Any]]:
    """The generated vector flattened, each value typed as tt-metal's OpParam: numbers (bools too)
    as floats, text, lists and maps as JSON, anything else as its text (None is "None")."""
    params = []
    for name, value in _flatten(generated_vector(vector)):
        if isinstance(value, (int, float)):
            params.append({"param_name": name, "param_value_numeric": float(value)})
        elif isinstance(value, (list, dict)):
            params.append({"param_name": name, "param_value_json": value})
        else:
            params.append({"param_name": name, "param_value_text": value if isinstance(value, str) else str(value)})
    return params


def _git(*args: str) -> str:
    try:
        found = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return found.stdout.strip() or UNKNOWN


def optest_status(row: Row, verdict: str) -> str:
    """tt-metal's TestStatus string for a row (its _map_status): its TestStatus has no xfail/xpass,
    so its mapping falls back to "error" for them, and so does ours."""
    return OPTEST_STATUS.get(verdict if verdict in (XFAIL, XPASS) else row.status, "error")


def _optest(row: Row, verdict: str, git_sha: str, created: float) -> dict[str, Any]:
    vector, record = row.vector, row.record
    start, end = _times(row, created)
    name = _sweep_name(vector)
    mapped = optest_status(row, verdict)
    failed = row.status != status.PASS and row.status in status.EXECUTED | {status.INFRA, status.ERROR}
    exception = record.get("message") if failed and record.get("message") else None
    metrics = []
    if row.e2e_ms is not None:
        metrics.append({"metric_name": "e2e_perf_ms", "metric_value": float(row.e2e_ms)})
    for key, value in (record.get("device_perf") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metric = key if key.startswith("device_") else f"device_{key}"
            metrics.append({"metric_name": metric, "metric_value": float(value)})
    backend = record.get("backend", "")
    message = repr(row.pcc) if row.pcc is not None else record.get("message") or None  # tt-metal: the bare PCC
    return {
        "github_job_id": _int_env("GITHUB_JOB_ID"),
        "full_test_name": name,
        "filepath": name,
        "test_case_name": vector["suite"],
        "test_start_ts": _ts(start),
        "test_end_ts": _ts(end),
        "success": mapped == "pass",
        "skipped": mapped == "skipped",
        "error_message": str(exception),  # tt-metal writes str(exception): "None" when there is none
        "exception": exception,
        "error_hash": hashlib.sha256(str(exception).encode()).hexdigest(),
        "frontend": "ttnn.op",
        "framework_op_name": "sweep",
        "backend": "emulated" if backend == "emulated" else "n/a",  # emulated results always say so
        "data_source": "ttnn op test",
        "model_name": ", ".join(vector.get("sources") or []) or "n/a",
        "op_kind": name.split(".")[0],
        "op_name": name.split(".")[-1],
        "git_sha": git_sha,
        "status": mapped,
        "card_type": card_type(vector.get("traced_machine")),
        "input_hash": vector.get("config_hash") or vector["id"],
        "message": message,
        "metrics": sorted(metrics, key=lambda m: m["metric_name"]) or None,
        "op_params_set": op_params(vector),
        "config": None,
        "inputs": None,
        "outputs": None,
        "op_params": None,
    }


def _int_env(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else None


def run_contents(meta: dict[str, Any]) -> str:
    """tt-metal's `<module>, <suite>` (its module names for the selected ops), or "all_sweeps"."""
    ops, suite = meta["selection"].get("ops"), meta["selection"]["suite"]
    if not ops:
        return "all_sweeps"
    return f"{','.join(_sweep_name({'op': op, 'suite': suite}) for op in ops)}, {suite}"


def _times(row: Row, created: float) -> tuple[float, float]:
    """(start, end) of a row's final record; a final status without one (never expected) gets the
    run's creation time rather than a null tt-metal's model rejects."""
    start, end = row.record.get("start"), row.record.get("end")
    start = start if start is not None else end if end is not None else created
    return start, end if end is not None else start


def run_status(report: dict[str, Any], rows: list[Row], verdicts: list[str]) -> str:
    """tt-metal's RunStatus: did_not_finish while anything is pending or when vectors were
    cancelled or expired; fail when anything failed unexpectedly (an executed failure no
    expectation covers, ERROR, INFRA) or an expected failure passed (XPASS: the expectation no
    longer holds); passed otherwise."""
    if not report["complete"] or any(row.status in (status.CANCELED, status.EXPIRED, PENDING) for row in rows):
        return "did_not_finish"
    # without expectations a verdict is the raw status; with them an executed failure is FAIL or XFAIL
    failing = status.FAILED | {FAIL, XPASS, status.ERROR, status.INFRA}
    return "fail" if any(verdict in failing for verdict in verdicts) else "passed"


def to_optest(report: dict[str, Any], rows: list[Row], expectations: Expectations | None = None) -> str:
    """An OpRun with one OpTest per vector that has a result (tt-metal's oprun_*.json). Vectors of an
    unfinished run that have none yet are left out: there is no start or end to report for them."""
    meta = report["meta"]
    git_sha = os.environ.get("GITHUB_SHA", "")[:10] or _git("rev-parse", "--short", "HEAD")
    verdicts = _verdicts(rows, expectations)
    done = [(row, verdict) for row, verdict in zip(rows, verdicts, strict=True) if row.status != PENDING]
    tests = [_optest(row, verdict, git_sha, meta["created"]) for row, verdict in done]
    times = [_times(row, meta["created"]) for row, _ in done]
    starts, ends = [t[0] for t in times], [t[1] for t in times]
    machines = sorted({row.vector["machine"] for row in rows})
    end = max(ends) if ends and report["complete"] else time.time()  # unfinished: as of this export
    oprun = {
        "initiated_by": os.environ.get("GITHUB_WORKFLOW") or meta.get("who") or getpass.getuser(),
        "host": meta.get("host") or socket.gethostname(),
        "card_type": ", ".join(sorted({PROFILES[m].arch if m in PROFILES else m for m in machines})) or UNKNOWN,
        "run_type": "sweeps",
        "run_contents": run_contents(meta),
        "git_author": _git("log", "-1", "--format=%an"),
        "git_branch_name": os.environ.get("GITHUB_REF_NAME") or _git("rev-parse", "--abbrev-ref", "HEAD"),
        "git_sha": git_sha,
        "github_pipeline_id": _int_env("GITHUB_RUN_ID"),
        "run_start_ts": _ts(min(starts) if starts else meta["created"]),
        "run_end_ts": _ts(max(end, min(starts) if starts else meta["created"])),
        "status": run_status(report, rows, verdicts),
        "tests": tests,
    }
    return json.dumps(oprun, indent=1) + "\n"


def optest_filename(report: dict[str, Any]) -> str:
    """tt-metal's run file name: oprun_<host[:32]>_<sha256(run_contents)[:12]>_<YYYYmmdd_HHMMSS>.json."""
    meta = report["meta"]
    contents = run_contents(meta)
    stamp = _dt.datetime.fromtimestamp(meta["created"], tz=_dt.timezone.utc).strftime("%Y%m%d_%H%M%S")
    host = meta["host"].replace("/", "_")[:32]
    return f"oprun_{host}_{hashlib.sha256(contents.encode()).hexdigest()[:12]}_{stamp}.json"
