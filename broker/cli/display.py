"""Text for people: the progress bar, the worker table and the report (`--json` gives the data)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from sweeps import status


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100.0 * value:.1f}%"


def _num(value: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


def progress_line(
    prog: dict[str, Any], live_workers: int | None = None, width: int = 30, no_worker: dict[str, int] | None = None
) -> str:
    """`no_worker`: machine types whose vectors wait with no live worker to take them."""
    total, done = prog["total"], prog["done"]
    filled = int(width * done / total) if total else width
    bar = "#" * filled + "-" * (width - filled)
    rate = prog["rate_per_s"]
    counts = " ".join(f"{s}={prog['counts'][s]}" for s in status.ALL if prog["counts"].get(s))  # ERROR first
    line = f"[{bar}] {done}/{total}"
    line += f"  {rate:.1f}/s" if rate else ""
    line += f"  ETA {_duration(prog['eta_s'])}" if not prog["complete"] else "  done"
    if live_workers is not None:
        line += f"  workers {live_workers}"
    line = f"{line}  {counts}"
    for machine, waiting in (no_worker or {}).items():
        line += f"  [no live {machine} worker: {waiting} vectors wait]"
    if prog.get("enqueue") == "writing":
        line += "  [an enqueue is still writing this run]"
    elif prog.get("enqueue") == "interrupted":
        line += f"  [an enqueue died mid-way: `sweepctl enqueue --run-id {prog['run_id']}` finishes it]"
    return line


class ProgressBar:
    """One redrawn line on a terminal. Into a log file (stderr not a terminal): a line when
    something changed, at most every `every` s, and one every `quiet` s while nothing does."""

    def __init__(self, stream: TextIO = sys.stderr, every: float = 10.0, quiet: float = 60.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every = every
        self.quiet = quiet
        self._last: float | None = None
        self._state: Any = None

    def show(self, line: str, final: bool = False, state: Any = None) -> None:
        """`state`: what the line says that matters (not its rate or ETA); a log gets a new line
        only when it changed."""
        if self.tty:
            self.stream.write("\r\x1b[2K" + line + ("\n" if final else ""))
            self.stream.flush()
            return
        now = time.monotonic()
        since = None if self._last is None else now - self._last
        changed = state is None or state != self._state
        if final or since is None or (changed and since >= self.every) or since >= self.quiet:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last, self._state = now, state


def workers_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["no workers have registered with this Redis"]
    lines = [f"{'worker':<34} {'machine':<8} {'devices':<8} {'backend':<9} {'health':<8} {'beat':>6}  current"]
    for r in rows:
        lines.append(
            f"{r['name']:<34} {r['machine']:<8} {r['devices'] or '-':<8} {r['backend']:<9} {r['health']:<8} "
            f"{r['last_heartbeat_s']:>5}s  {r['current'] or '-'}"
        )
    return lines


def report_lines(report: dict[str, Any], by: str = "op") -> list[str]:
    meta = report["meta"]
    backends = ", ".join(f"backend={b} ({n})" for b, n in sorted(report["backends"].items())) or "nothing executed"
    lines = [
        f"run {report['run_id']}  suite {meta['selection']['suite']}  by {meta['who']}@{meta['host']}  "
        f"ttnn {meta['versions']['ttnn']}  {backends}",
        f"{report['done']}/{report['total']} vectors final{'' if report['complete'] else ' (still running)'}; "
        f"executed {report['executed']}, failed {report['failed']}, pass rate {_pct(report['pass_rate'])} of executed"
        + (f"; reused {report['reused']} (passed in the base run, not run here)" if report.get("reused") else ""),
        "  " + "  ".join(f"{s} {report['counts'][s]}" for s in status.ALL if report["counts"].get(s)),
    ]
    lines += error_lines(report)
    if by == "machine":
        return lines + [""] + machine_lines(report) + _failure_lines(report)
    if by == "model":
        return lines + _failure_lines(report)
    lines += [
        "",
        f"{'op':<46} {'exec':>5} {'pass':>5} {'rate':>7} {'pcc min':>9} {'pcc med':>9} "
        f"{'e2e p50':>9} {'p95 ms':>8}  other",
    ]
    for op, row in report["ops"].items():
        other = " ".join(f"{s}={n}" for s, n in row["counts"].items() if s != status.PASS)
        lines.append(
            f"{op:<46} {row['executed']:>5} {row['pass']:>5} {_pct(row['pass_rate']):>7} "
            f"{_num(row['pcc_min'], '{:.5f}'):>9} {_num(row['pcc_median'], '{:.5f}'):>9} "
            f"{_num(row['e2e_ms_p50']):>9} {_num(row['e2e_ms_p95']):>8}  {other}"
        )
    lines += ["", f"{'machine':<12} {'exec':>5} {'rate':>7}  counts"]
    for machine, row in report["machines"].items():
        counts = " ".join(f"{s}={n}" for s, n in row["counts"].items())
        lines.append(f"{machine:<12} {row['executed']:>5} {_pct(row['pass_rate']):>7}  {counts}")
    return lines + _failure_lines(report)


def error_lines(report: dict[str, Any]) -> list[str]:
    """sweepctl's own failures, first and under their own heading: they say nothing about the ops."""
    errors = report["errors"]
    if not errors["count"]:
        return []
    lines = [
        "",
        f"ERROR: {errors['count']} vectors failed in sweepctl's own code, not in the op (not executed, not in "
        f"the pass rate); fix sweepctl, then `sweepctl retry {report['run_id']} --status ERROR`",
    ]
    for b in errors["buckets"]:
        ops = ", ".join(list(b["ops"])[:4]) + (" ..." if len(b["ops"]) > 4 else "")
        lines.append(f"  {b['count']:>6}  ops: {ops}  machines: {', '.join(b['machines'])}")
        lines.append(f"          e.g. vector {b['example_vector'][:12]}: {b['example_message'][:300]}")
    return lines


def _failure_lines(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if report["failures"]:
        shown, total = report["failures_shown"], report["failures_total"]
        lines += ["", f"failing vectors ({shown} of {total}):"]
        for r in report["failures"]:
            pcc = f" pcc {r['pcc']:.5f}<{r['threshold']}" if r.get("pcc") is not None else ""
            lines.append(
                f"  {r['status']:<13} {r['op']} on {r['machine']} vector {r['vector'][:12]}{pcc}: {r['message'][:160]}"
            )
    return lines


def machine_lines(report: dict[str, Any]) -> list[str]:
    """`--by machine`: each machine, then its ops."""
    lines = [f"{'machine / op':<46} {'exec':>5} {'rate':>7}  counts"]
    for machine, row in report["machines"].items():
        counts = " ".join(f"{s}={n}" for s, n in row["counts"].items())
        lines.append(f"{machine:<46} {row['executed']:>5} {_pct(row['pass_rate']):>7}  {counts}")
        for op, sub in row["ops"].items():
            counts = " ".join(f"{s}={n}" for s, n in sub["counts"].items())
            lines.append(f"  {op:<44} {sub['executed']:>5} {_pct(sub['pass_rate']):>7}  {counts}")
    return lines


def bucket_lines(buckets: list[dict[str, Any]], limit: int = 20) -> list[str]:
    if not buckets:
        return []
    shown = f"{min(limit, len(buckets))} of {len(buckets)}"
    lines = ["", f"failure buckets ({shown}; ERROR first, then executed failures):"]
    for b in buckets[:limit]:
        states = " ".join(f"{s}={n}" for s, n in b["statuses"].items())
        ops = ", ".join(list(b["ops"])[:4]) + (" ..." if len(b["ops"]) > 4 else "")
        lines.append(f"  {b['count']:>6}  {states}  ops: {ops}  machines: {', '.join(b['machines'])}")
        lines.append(f"          e.g. vector {b['example_vector'][:12]}: {b['signature'][:150]}")
    return lines


def model_lines(view: dict[str, Any]) -> list[str]:
    """`--by model`: every unique config each model traced, with its status per machine."""
    lines: list[str] = []
    for model, entry in view.items():
        machines = entry["machines"]
        counts = " ".join(f"{s}={n}" for s, n in entry["counts"].items())
        lines += ["", f"model {model}: {len(entry['configs'])} configs  {counts}"]
        lines.append(f"  {'op':<40} {'config':<16} " + " ".join(f"{m:<13}" for m in machines))
        for config in entry["configs"]:
            cells = " ".join(f"{config['status'].get(m, '-'):<13}" for m in machines)
            lines.append(f"  {config['op']:<40} {config['config'][:16]:<16} {cells}")
    return lines or ["no vectors with a traced model in this run"]


def compare_lines(diff: dict[str, Any]) -> list[str]:
    c = diff["counts"]
    tol = diff["tolerances"]
    lines = [
        f"run {diff['run_id']} against base {diff['base_id']}: {diff['compared']} vectors compared "
        f"({diff['joined_by_config_hash']} joined by config_hash), {diff['not_comparable']} not comparable "
        f"(ERROR/INFRA/EXPIRED/CANCELED/never ran), {diff['only_in_run']} only in the run, "
        f"{diff['only_in_base']} only in the base",
        f"  newly failing {c['newly_failing']}, newly passing {c['newly_passing']}, PCC drops > {tol['pcc']} "
        f"{c['pcc_drops']}, e2e regressions > {tol['e2e_pct']:g}% {c['e2e_regressions']}, new failure signatures "
        f"{len(diff['new_signatures'])}",
    ]
    for kind, title in (
        ("newly_failing", "newly failing"),
        ("pcc_drops", "PCC drops"),
        ("e2e_regressions", "e2e regressions"),
        ("newly_passing", "newly passing"),
    ):
        items = diff["changes"][kind]
        if not items:
            continue
        lines += ["", f"{title} ({len(items)} of {c[kind]}):"]
        for it in items:
            b, r = it["base"], it["run"]
            lines.append(
                f"  {it['op']} on {it['machine']} vector {it['vector'][:12]}: {b['status']} -> {r['status']}"
                f"  pcc {_num(b['pcc'], '{:.5f}')} -> {_num(r['pcc'], '{:.5f}')}"
                f"  e2e {_num(b['e2e_ms'])} -> {_num(r['e2e_ms'])} ms"
            )
    if diff["new_signatures"]:
        lines += ["", "new failure signatures:"]
        lines += [f"  {s['count']:>6}  {s['signature'][:150]}" for s in diff["new_signatures"][:20]]
    if diff["new_error_signatures"]:
        lines += ["", "new ERROR signatures (sweepctl's own failures, not a regression of the op):"]
        lines += [f"  {s['count']:>6}  {s['signature'][:150]}" for s in diff["new_error_signatures"][:20]]
    verdict = "REGRESSED" if diff["regressed"] else "no regression"
    if diff["errors"]:
        verdict += f" of the ops; but {diff['errors']} ERROR (sweepctl's own failures) in the run"
    return lines + ["", verdict]


def expectation_lines(judged: dict[str, Any]) -> list[str]:
    counts = " ".join(f"{s}={n}" for s, n in judged["counts"].items())
    lines = ["", f"against {judged['expectations']}: {counts}"]
    fails = judged["unexpected_failures"]
    if fails:
        lines.append(f"unexpected failures ({len(fails)}):")
        lines += [
            f"  {f['status']:<13} {f['op']} on {f['machine']} vector {f['vector'][:12]}: {f['message'][:140]}"
            for f in fails[:50]
        ]
    if judged["xpass_to_promote"]:
        lines.append("XPASS: these entries now pass; promote them to expected_passing:")
        lines += [f"  {p['entry']} ({p['status']}): {p['vectors']} vectors passed" for p in judged["xpass_to_promote"]]
    return lines
