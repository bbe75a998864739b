"""`sweepctl report RUN --format html`: one self-contained page (inline SVG, no scripts, no fonts or
files fetched), so it opens offline and can be attached to a CI run.

Plots: PCC per op (on a "nines" axis, -log10(1 - PCC), where 0.99 and 0.9999 are far apart),
e2e time against input size per op (log-log), and status by machine (stacked bars).
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from broker.reports.rows import Row
from sweeps import status

COLOURS = {
    status.ERROR: "#d81b60",
    status.PASS: "#2e7d32",
    status.FAIL_ACCURACY: "#f9a825",
    status.FAIL_OP: "#c62828",
    status.FAIL_L1_OOM: "#6a1b9a",
    status.HANG: "#ef6c00",
    status.CRASH: "#4e342e",
    status.INVALID: "#9e9e9e",
    status.INFRA: "#1565c0",
    status.NOT_RUN: "#cfcfcf",
    status.EXPIRED: "#757575",
    status.CANCELED: "#616161",
}
MAX_NINES = 7.0
MAX_PANELS = 30  # e2e panels (ops); the rest are listed as omitted

_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;font-size:12px} td,th{border:1px solid #ddd;padding:3px 6px;text-align:right}
td:first-child,th:first-child{text-align:left} .msg{text-align:left;font-family:monospace;max-width:720px}
.panels{display:flex;flex-wrap:wrap;gap:8px} .legend span{display:inline-block;margin-right:12px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
svg text{font-size:10px;fill:#333}
"""


def _nines(pcc: float) -> float:
    gap = 1.0 - pcc
    return MAX_NINES if gap <= 10**-MAX_NINES else max(0.0, min(MAX_NINES, -math.log10(min(gap, 1.0))))


def _legend(states: list[str]) -> str:
    items = "".join(f'<span><i style="background:{COLOURS.get(s, "#000")}"></i>{escape(s)}</span>' for s in states)
    return f'<div class="legend">{items}</div>'


def pcc_plot(rows: list[Row]) -> str:
    by_op: dict[str, list[Row]] = {}
    for row in rows:
        if row.pcc is not None:
            by_op.setdefault(row.vector["op"], []).append(row)
    if not by_op:
        return "<p>No PCC was measured.</p>"
    left, width, lane = 230, 560, 18
    height = lane * len(by_op) + 40
    parts = [f'<svg id="pcc-plot" xmlns="http://www.w3.org/2000/svg" width="{left + width + 20}" height="{height}">']
    for n in range(int(MAX_NINES) + 1):
        x = left + width * n / MAX_NINES
        label = "0" if n == 0 else "0." + "9" * n
        parts.append(f'<line x1="{x:.1f}" y1="10" x2="{x:.1f}" y2="{height - 25}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - 10}" text-anchor="middle">{label}</text>')
    for i, (op, items) in enumerate(sorted(by_op.items())):
        y = 20 + i * lane
        parts.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{escape(op)}</text>')
        for j, row in enumerate(items):
            x = left + width * _nines(row.pcc) / MAX_NINES
            jitter = ((j * 7919) % 11 - 5) * 0.9
            colour = COLOURS.get(row.status, "#000")
            parts.append(
                f'<circle class="pcc" cx="{x:.1f}" cy="{y + jitter:.1f}" r="3" fill="{colour}" fill-opacity="0.7">'
                f"<title>{escape(row.id)} {escape(row.status)} pcc={row.pcc:.6f}</title></circle>"
            )
    parts.append("</svg>")
    return "".join(parts)


def e2e_panels(rows: list[Row]) -> str:
    by_op: dict[str, list[Row]] = {}
    for row in rows:
        if row.e2e_ms is not None and row.e2e_ms > 0 and row.elements > 0:
            by_op.setdefault(row.vector["op"], []).append(row)
    if not by_op:
        return "<p>No e2e time was measured.</p>"
    panels = []
    ops = sorted(by_op)
    for op in ops[:MAX_PANELS]:
        items = by_op[op]
        xs = [math.log10(r.elements) for r in items]
        ys = [math.log10(r.e2e_ms) for r in items]
        x0, x1 = min(xs) - 0.1, max(xs) + 0.1
        y0, y1 = min(ys) - 0.1, max(ys) + 0.1
        w, h, pad = 240, 150, 46
        svg = [f'<svg class="e2e" xmlns="http://www.w3.org/2000/svg" width="{w + pad}" height="{h + pad}">']
        svg.append(f'<text x="{pad}" y="12">{escape(op)}</text>')
        svg.append(f'<rect x="{pad}" y="18" width="{w - 10}" height="{h - 28}" fill="none" stroke="#ccc"/>')
        svg.append(f'<text x="{pad}" y="{h + 2}">{10**x0:.3g}</text>')
        svg.append(f'<text x="{w - 10}" y="{h + 2}" text-anchor="end">{10**x1:.3g} elements</text>')
        svg.append(f'<text x="{pad - 2}" y="26" text-anchor="end">{10**y1:.2g}</text>')
        svg.append(f'<text x="{pad - 2}" y="{h - 10}" text-anchor="end">{10**y0:.2g} ms</text>')
        for row, x, y in zip(items, xs, ys, strict=True):
            cx = pad + (w - 10) * (x - x0) / (x1 - x0)
            cy = 18 + (h - 28) * (1 - (y - y0) / (y1 - y0))
            colour = COLOURS.get(row.status, "#000")
            svg.append(
                f'<circle class="e2e-point" cx="{cx:.1f}" cy="{cy:.1f}" r="2.5" fill="{colour}">'
                f"<title>{escape(row.id)} {row.elements} elements {row.e2e_ms:.4f} ms</title></circle>"
            )
        svg.append("</svg>")
        panels.append("".join(svg))
    omitted = f"<p>{len(ops) - MAX_PANELS} more ops not drawn.</p>" if len(ops) > MAX_PANELS else ""
    return f'<div class="panels">{"".join(panels)}</div>{omitted}'


def machine_bars(report: dict[str, Any]) -> str:
    machines = report["machines"]
    if not machines:
        return "<p>No vector has a final status yet.</p>"
    left, width, lane = 90, 600, 26
    parts = [f'<svg id="machine-bars" xmlns="http://www.w3.org/2000/svg" width="{left + width + 80}" '
             f'height="{lane * len(machines) + 10}">']  # fmt: skip
    for i, (machine, row) in enumerate(machines.items()):
        total = sum(row["counts"].values()) or 1
        y, x = 5 + i * lane, float(left)
        parts.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{escape(machine)}</text>')
        for state in status.ALL:
            n = row["counts"].get(state, 0)
            if not n:
                continue
            w = width * n / total
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y}" width="{w:.1f}" height="18" fill="{COLOURS[state]}">'
                f"<title>{escape(machine)} {state} {n}</title></rect>"
            )
            x += w
        parts.append(f'<text x="{left + width + 6}" y="{y + 14}">{total}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(header: list[str], body: list[list[Any]], classes: dict[int, str] | None = None) -> str:
    classes = classes or {}
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    rows = "".join(
        "<tr>" + "".join(
            f'<td class="{classes[i]}">{escape(str(v))}</td>' if i in classes else f"<td>{escape(str(v))}</td>"
            for i, v in enumerate(r)
        ) + "</tr>"
        for r in body
    )  # fmt: skip
    return f"<table><tr>{head}</tr>{rows}</table>"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(report: dict[str, Any], rows: list[Row]) -> str:
    meta = report["meta"]
    backends = ", ".join(f"backend={b} ({n})" for b, n in sorted(report["backends"].items())) or "nothing executed"
    ops = [
        [op, r["executed"], r["pass"], _fmt(r["pass_rate"] and 100 * r["pass_rate"], ".1f"),
         _fmt(r["pcc_min"], ".5f"), _fmt(r["pcc_median"], ".5f"), _fmt(r["e2e_ms_p50"], ".3f"),
         " ".join(f"{s}={n}" for s, n in r["counts"].items() if s != status.PASS)]
        for op, r in report["ops"].items()
    ]  # fmt: skip
    buckets = [
        [b["count"], " ".join(f"{s}={n}" for s, n in b["statuses"].items()), ", ".join(b["ops"]),
         ", ".join(b["machines"]), b["example_vector"][:12], b["signature"]]
        for b in report["buckets"]
    ]  # fmt: skip
    failing = [
        [r["status"], r["op"], r["machine"], r["vector"][:12], _fmt(r.get("pcc"), ".5f"), r["message"][:300]]
        for r in report["failures"]
    ]
    states = [s for s in status.ALL if report["counts"].get(s)]
    errors = report["errors"]
    error_rows = [
        [b["count"], ", ".join(b["ops"]), ", ".join(b["machines"]), b["example_vector"][:12], b["example_message"]]
        for b in errors["buckets"]
    ]
    error_section = (
        f'<h2 id="errors">ERROR: {errors["count"]} vectors failed in sweepctl\'s own code, not in the op</h2>'
        "<p>Not executed and not in the pass rate; fix sweepctl, then retry them with "
        f"<code>sweepctl retry {escape(report['run_id'])} --status ERROR</code>.</p>"
        + _table(["count", "ops", "machines", "example", "message"], error_rows, {4: "msg"})
        if errors["count"]
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sweepctl report {escape(report["run_id"])}</title>
<style>{_STYLE}</style></head><body>
<h1>sweepctl run {escape(report["run_id"])}</h1>
<p>suite {escape(meta["selection"]["suite"])} &middot; by {escape(meta["who"])}@{escape(meta["host"])} &middot;
ttnn {escape(meta["versions"]["ttnn"])} &middot; <b>{escape(backends)}</b></p>
<p id="summary">{report["done"]}/{report["total"]} vectors final; executed {report["executed"]}, failed
{report["failed"]}, pass rate {_fmt(report["pass_rate"] and 100 * report["pass_rate"], ".1f")}% of executed;
ERROR (sweepctl's own failures) {errors["count"]}.</p>
{error_section}
{_legend(states)}
<h2>Status by machine</h2>{machine_bars(report)}
<h2>PCC per op</h2>{pcc_plot(rows)}
<h2>e2e time against input size, per op</h2>{e2e_panels(rows)}
<h2>Ops</h2>{_table(["op", "exec", "pass", "rate %", "pcc min", "pcc med", "e2e p50 ms", "other"], ops)}
<h2>Failure buckets</h2>{_table(["count", "statuses", "ops", "machines", "example", "signature"], buckets, {5: "msg"})}
<h2>Failing vectors ({report["failures_shown"]} of {report["failures_total"]})</h2>
{_table(["status", "op", "machine", "vector", "pcc", "message"], failing, {5: "msg"})}
</body></html>
"""
