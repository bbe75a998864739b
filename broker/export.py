"""Exports of a run, one row per vector: CSV for spreadsheets, JUnit XML for CI, and tt-metal's
OpRun/OpTest JSON (field names, status strings and metric names as tt-metal's sweeps result
destination writes them, anchor study §2.4) so their Superset import keeps working.

With expectations, XFAIL and XPASS replace the raw verdict where tt-metal has them (JUnit:
an XFAIL is skipped, an XPASS passes; OpTest: "xfail" / "xpass"). ERROR, sweepctl's own failure,
is a JUnit <error> (a harness error, not the test's <failure>) and OpTest "error", the status
tt-metal's exporter writes for anything that is not a verdict on the op.

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
from typing import Any
from xml.etree import ElementTree as ET

from broker.expectations import EXCLUDED, FAIL, XFAIL, XPASS, Expectations
from broker.rows import PENDING, Row
from sweeps import catalogue, status
from sweeps.profiles import PROFILES

FORMATS = ("json", "csv", "junit", "html", "optest")
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
    XFAIL: "xfail",
    XPASS: "xpass",
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


def _card_type(machine: str) -> str:
    profile = PROFILES.get(machine)
    if profile is None:
        return "n/a"
    cards = "card" if profile.card_count == 1 else "cards"
    return f"{profile.board_type} {profile.device_series} ({profile.card_count} {cards})"


def _ts(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc).isoformat()


def _params(value: Any, prefix: str = "") -> list[dict[str, Any]]:
    """A vector flattened to dotted keys (lists kept whole), each typed as tt-metal's OpParam."""
    if isinstance(value, dict):
        return [item for key, v in value.items() for item in _params(v, f"{prefix}.{key}" if prefix else key)]
    param: dict[str, Any] = {"param_name": prefix}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        param["param_value_numeric"] = value
    elif isinstance(value, str):
        param["param_value_text"] = value
    else:
        param["param_value_json"] = value
    return [param]


def _git(*args: str) -> str:
    try:
        found = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return "n/a"
    return found.stdout.strip() or "n/a"


def _optest(row: Row, verdict: str, git_sha: str) -> dict[str, Any]:
    vector, record = row.vector, row.record
    name = _sweep_name(vector)
    mapped = OPTEST_STATUS.get(verdict if verdict in (XFAIL, XPASS) else row.status, "error")
    failed = row.status != status.PASS and row.status in status.EXECUTED | {status.INFRA, status.ERROR}
    exception = record.get("message") if failed and record.get("message") else "None"
    metrics = []
    if row.e2e_ms is not None:
        metrics.append({"metric_name": "e2e_perf_ms", "metric_value": row.e2e_ms})
    for key, value in (record.get("device_perf") or {}).items():
        metrics.append({"metric_name": f"device_{key}", "metric_value": value})
    backend = record.get("backend", "")
    return {
        "github_job_id": None,
        "full_test_name": name,
        "filepath": name,
        "test_case_name": vector["suite"],
        "test_start_ts": _ts(record.get("start")),
        "test_end_ts": _ts(record.get("end")),
        "success": mapped == "pass",
        "skipped": mapped == "skipped",
        "error_message": exception,
        "exception": exception,
        "error_hash": hashlib.sha256(exception.encode()).hexdigest(),
        "frontend": "ttnn.op",
        "framework_op_name": "sweep",
        "backend": "emulated" if backend == "emulated" else "n/a",  # emulated results always say so
        "data_source": "ttnn op test",
        "model_name": ", ".join(vector.get("sources") or []) or "n/a",
        "op_kind": name.split(".")[0],
        "op_name": name.split(".")[-1],
        "git_sha": git_sha,
        "status": mapped,
        "card_type": _card_type(vector["machine"]),
        "input_hash": vector.get("config_hash") or vector["id"],
        "message": record.get("message") or (f"pcc={row.pcc!r}" if row.pcc is not None else ""),
        "metrics": sorted(metrics, key=lambda m: m["metric_name"]),
        "op_params_set": _params({k: v for k, v in vector.items() if k not in ("sources",)}),
        "config": None,
        "inputs": None,
        "outputs": None,
        "op_params": None,
    }


def to_optest(report: dict[str, Any], rows: list[Row], expectations: Expectations | None = None) -> str:
    """An OpRun with one OpTest per vector (tt-metal's oprun_*.json)."""
    meta = report["meta"]
    git_sha = os.environ.get("GITHUB_SHA", "")[:10] or _git("rev-parse", "--short", "HEAD")
    verdicts = _verdicts(rows, expectations)
    tests = [_optest(row, verdict, git_sha) for row, verdict in zip(rows, verdicts, strict=True)]
    starts = [r.record["start"] for r in rows if r.record.get("start")]
    ends = [r.record["end"] for r in rows if r.record.get("end")]
    ops = meta["selection"].get("ops")
    failed = any(t["status"].startswith("fail") or t["status"] == "error" for t in tests)
    run_status = "did_not_finish" if not report["complete"] else "fail" if failed else "passed"
    machines = sorted({row.vector["machine"] for row in rows})
    oprun = {
        "initiated_by": os.environ.get("GITHUB_WORKFLOW") or meta.get("who") or getpass.getuser(),
        "host": meta.get("host") or socket.gethostname(),
        "card_type": ", ".join(sorted({PROFILES[m].arch if m in PROFILES else m for m in machines})) or "n/a",
        "run_type": "sweeps",
        "run_contents": f"{','.join(ops)}, {meta['selection']['suite']}" if ops else "all_sweeps",
        "git_author": _git("log", "-1", "--format=%an"),
        "git_branch_name": os.environ.get("GITHUB_REF_NAME") or _git("rev-parse", "--abbrev-ref", "HEAD"),
        "git_sha": git_sha,
        "github_pipeline_id": os.environ.get("GITHUB_RUN_NUMBER") or os.environ.get("GITHUB_RUN_ID"),
        "run_start_ts": _ts(min(starts)) if starts else _ts(meta["created"]),
        "run_end_ts": _ts(max(ends)) if ends else None,
        "status": run_status,
        "tests": tests,
    }
    return json.dumps(oprun, indent=1) + "\n"


def optest_filename(report: dict[str, Any]) -> str:
    """tt-metal's run file name: oprun_<host[:32]>_<sha256(run_contents)[:12]>_<YYYYmmdd_HHMMSS>.json."""
    meta = report["meta"]
    ops = meta["selection"].get("ops")
    contents = f"{','.join(ops)}, {meta['selection']['suite']}" if ops else "all_sweeps"
    stamp = _dt.datetime.fromtimestamp(meta["created"], tz=_dt.timezone.utc).strftime("%Y%m%d_%H%M%S")
    return f"oprun_{meta['host'][:32]}_{hashlib.sha256(contents.encode()).hexdigest()[:12]}_{stamp}.json"
