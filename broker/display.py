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


def progress_line(prog: dict[str, Any], live_workers: int | None = None, width: int = 30) -> str:
    total, done = prog["total"], prog["done"]
    filled = int(width * done / total) if total else width
    bar = "#" * filled + "-" * (width - filled)
    rate = prog["rate_per_s"]
    counts = " ".join(f"{s}={n}" for s, n in prog["counts"].items())
    line = f"[{bar}] {done}/{total}"
    line += f"  {rate:.1f}/s" if rate else ""
    line += f"  ETA {_duration(prog['eta_s'])}" if not prog["complete"] else "  done"
    if live_workers is not None:
        line += f"  workers {live_workers}"
    return f"{line}  {counts}"


class ProgressBar:
    """One redrawn line on a terminal; a line every few seconds when stderr is a log file."""

    def __init__(self, stream: TextIO = sys.stderr, every: float = 5.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every = every
        self._last = 0.0

    def show(self, line: str, final: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + line + ("\n" if final else ""))
            self.stream.flush()
            return
        now = time.monotonic()
        if final or now - self._last >= self.every:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last = now


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


def report_lines(report: dict[str, Any]) -> list[str]:
    meta = report["meta"]
    backends = ", ".join(f"backend={b} ({n})" for b, n in sorted(report["backends"].items())) or "nothing executed"
    lines = [
        f"run {report['run_id']}  suite {meta['selection']['suite']}  by {meta['who']}@{meta['host']}  "
        f"ttnn {meta['versions']['ttnn']}  {backends}",
        f"{report['done']}/{report['total']} vectors final{'' if report['complete'] else ' (still running)'}; "
        f"executed {report['executed']}, failed {report['failed']}, pass rate {_pct(report['pass_rate'])} of executed",
        "  " + "  ".join(f"{s} {report['counts'][s]}" for s in status.ALL if report["counts"].get(s)),
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
    if report["failures"]:
        shown, total = report["failures_shown"], report["failures_total"]
        lines += ["", f"failing vectors ({shown} of {total}):"]
        for r in report["failures"]:
            pcc = f" pcc {r['pcc']:.5f}<{r['threshold']}" if r.get("pcc") is not None else ""
            lines.append(
                f"  {r['status']:<13} {r['op']} on {r['machine']} vector {r['vector'][:12]}{pcc}: {r['message'][:160]}"
            )
    return lines
