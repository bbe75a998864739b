"""Reading a run back: progress (status/watch), workers, and the report — all from the aggregates
kept as results land, plus the failing records; never a scan of every result. sweepctl's own
failures (ERROR) get a section of their own, read before everything else.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from broker import registry
from broker.coordinator import PUBLISHING, enqueue_state, require_run
from broker.keys import Agg, Keys
from broker.results import decode_record, ms_of_bucket, pcc_of_bucket
from sweeps import status


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def progress(redis: Any, keys: Keys, run_id: str) -> dict[str, Any]:
    """done/total, counts, rate and ETA. The total is the vectors the run stores (read at once with
    them), and a run is complete only when each of them is final and no enqueue is still writing
    it ("enqueue" says "writing", or "interrupted" when one died: the next enqueue finishes it).
    "waiting" counts the vectors of each machine type not yet final."""
    meta = require_run(redis, keys, run_id)
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(keys.run(run_id))
    pipe.hlen(keys.vectors(run_id))
    replies = pipe.execute()
    run = {_text(k): _text(v) for k, v in replies[0].items()}
    agg = read_agg(redis, keys, run_id)
    by_status = Agg.prefix(Agg.STATUS)
    counts = {name[len(by_status) :]: int(v) for name, v in agg.items() if name.startswith(by_status) and int(v)}
    total = replies[1]
    done = int(agg.get(Agg.DONE, 0))
    t_first, t_last = float(agg.get(Agg.T_FIRST, 0) or 0), float(agg.get(Agg.T_LAST, 0) or 0)
    executed = sum(n for s, n in counts.items() if status.is_executed(s))
    span = t_last - max(t_first, meta["created"]) if t_last else 0.0
    rate = executed / span if span > 0 and executed > 1 else None
    left = total - done
    finished: Counter = Counter()
    by_machine = Agg.prefix(Agg.MACHINE_STATUS)
    for name, value in agg.items():
        if name.startswith(by_machine):
            finished[name[len(by_machine) :].rsplit(Agg.SEP, 1)[0]] += int(value)
    stored = {name[6:]: int(v) for name, v in run.items() if name.startswith("total|")}
    waiting = {m: n - finished[m] for m, n in sorted(stored.items()) if n > finished[m]}
    enqueue = enqueue_state(redis, keys, run_id) if PUBLISHING in run else None
    return {
        "run_id": run_id,
        "meta": meta,
        "total": total,
        "done": done,
        "counts": dict(sorted(counts.items())),
        "rate_per_s": rate,
        "eta_s": left / rate if rate and left else (0.0 if not left else None),
        "waiting": waiting,
        "enqueue": enqueue,
        "complete": total > 0 and done >= total and enqueue is None,
    }


def workers(redis: Any, keys: Keys) -> list[dict[str, Any]]:
    """Every registered worker; one whose heartbeat lapsed (broker/registry.py) shows LOST."""
    now = registry.clock(redis)
    rows = []
    for name in redis.zrange(keys.workers(), 0, -1):
        info = {_text(k): _text(v) for k, v in redis.hgetall(keys.worker(_text(name))).items()}
        if not info:
            continue
        beat = float(info.get("heartbeat", 0))
        health = info.get("health", "UNKNOWN")
        if health != "STOPPED" and not registry.is_live(info, now):
            health = "LOST"
        rows.append(
            {
                "name": _text(name),
                "machine": info.get("machine", ""),
                "devices": info.get("devices", ""),
                "backend": info.get("backend", ""),
                "host": info.get("host", ""),
                "pid": int(info["pid"]) if info.get("pid", "").isdigit() else None,
                "health": health,
                "current": info.get("current", ""),
                "last_heartbeat_s": round(now - beat, 1),
            }
        )
    return rows


LIVE = ("GOOD", "UNKNOWN")  # consuming, or opening its devices; BAD, LOST and STOPPED workers take nothing


def live_backends(rows: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Machine type -> the backends its live workers run (a machine with none is absent)."""
    found: dict[str, set[str]] = {}
    for row in rows:
        if row["health"] in LIVE:
            found.setdefault(row["machine"], set()).add(row["backend"])
    return found


def _percentile(histogram: dict[int, int], fraction: float) -> int | None:
    total = sum(histogram.values())
    if not total:
        return None
    target = fraction * total
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= target:
            return bucket
    return max(histogram)


def _pcc_median(histogram: dict[int, int]) -> float | None:
    """Median PCC: the PCC histogram runs in (1 - pcc) decades, so the order is reversed."""
    total = sum(histogram.values())
    if not total:
        return None
    seen = 0
    for bucket in sorted(histogram, reverse=True):  # best PCC first
        seen += histogram[bucket]
        if seen >= total / 2:
            return pcc_of_bucket(bucket)
    return None


def _clamp(median: float | None, low: float | None) -> float | None:
    """A bucket's low edge can sit below the lowest PCC seen; the median cannot."""
    return None if median is None else max(median, low) if low is not None else median


def build(redis: Any, keys: Keys, run_id: str, failures_limit: int = 50) -> dict[str, Any]:
    prog = progress(redis, keys, run_id)
    agg = read_agg(redis, keys, run_id)
    per_op: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"counts": {}, "pcc_hist": {}, "e2e_hist": {}, "pcc_min": None}
    )
    per_machine: dict[str, dict[str, int]] = defaultdict(dict)
    backends: dict[str, int] = {}
    machine_ops: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for name, value in agg.items():
        kind, _, rest = name.partition(Agg.SEP)
        if kind in (Agg.OP_STATUS, Agg.MACHINE_STATUS, Agg.MACHINE_OP_STATUS) and not int(value):
            continue  # a retried vector's old status, counted back down
        if kind == Agg.MACHINE_OP_STATUS:
            machine, op, state = rest.split(Agg.SEP)
            machine_ops[machine][op][state] = int(value)
        elif kind == Agg.OP_STATUS:
            op, state = rest.rsplit(Agg.SEP, 1)
            per_op[op]["counts"][state] = int(value)
        elif kind == Agg.MACHINE_STATUS:
            machine, state = rest.rsplit(Agg.SEP, 1)
            per_machine[machine][state] = int(value)
        elif kind in (Agg.PCC_HIST, Agg.E2E_HIST):
            op, bucket = rest.rsplit(Agg.SEP, 1)
            per_op[op]["pcc_hist" if kind == Agg.PCC_HIST else "e2e_hist"][int(bucket)] = int(value)
        elif kind == Agg.BACKEND:
            backends[rest] = int(value)
        elif kind == Agg.PCC_MIN:
            per_op[rest]["pcc_min"] = float(value)
    ops = {}
    for op, row in sorted(per_op.items()):
        counts = row["counts"]
        executed = sum(n for s, n in counts.items() if status.is_executed(s))
        p50, p95 = _percentile(row["e2e_hist"], 0.5), _percentile(row["e2e_hist"], 0.95)
        ops[op] = {
            "executed": executed,
            "pass": counts.get(status.PASS, 0),
            "counts": dict(sorted(counts.items())),
            "pass_rate": counts.get(status.PASS, 0) / executed if executed else None,
            "pcc_min": row["pcc_min"],
            "pcc_median": _clamp(_pcc_median(row["pcc_hist"]), row["pcc_min"]),
            "e2e_ms_p50": ms_of_bucket(p50) if p50 is not None else None,
            "e2e_ms_p95": ms_of_bucket(p95) if p95 is not None else None,
        }
    machines = {}
    for machine, counts in sorted(per_machine.items()):
        machines[machine] = {
            **_rates(counts),
            "ops": {op: _rates(c) for op, c in sorted(machine_ops[machine].items())},
        }
    failures = []
    for _, payload in redis.hscan_iter(keys.failed(run_id), count=500):
        record = decode_record(payload)
        if record["status"] != status.ERROR:  # listed apart, by bucket (errors_section)
            failures.append(record)
        if len(failures) >= failures_limit:
            break
    failures.sort(key=lambda r: (r["op"], r["status"], r["vector"]))
    executed = sum(n for s, n in prog["counts"].items() if status.is_executed(s))
    failed = sum(n for s, n in prog["counts"].items() if s in status.FAILED)
    buckets = failure_buckets(agg)
    errors = prog["counts"].get(status.ERROR, 0)
    return {
        **{k: prog[k] for k in ("run_id", "total", "done", "counts", "complete", "enqueue")},
        "meta": prog["meta"],
        "executed": executed,
        "failed": failed,
        "reused": prog["counts"].get(status.REUSED, 0),
        "pass_rate": prog["counts"].get(status.PASS, 0) / executed if executed else None,
        "ops": ops,
        "machines": machines,
        "failures": failures,
        "failures_shown": len(failures),
        "failures_total": redis.hlen(keys.failed(run_id)) - errors,
        "backends": backends,
        "errors": errors_section(redis, keys, run_id, errors, buckets),
        "buckets": buckets,
    }


def errors_section(
    redis: Any, keys: Keys, run_id: str, count: int, buckets: list[dict[str, Any]], limit: int = 20
) -> dict[str, Any]:
    """sweepctl's own failures (ERROR), listed before anything else: their count and their buckets,
    each with its example's whole message (the signature has the frame's line number stripped)."""
    found = [dict(b) for b in buckets if status.ERROR in b["statuses"]][:limit]
    examples = redis.hmget(keys.failed(run_id), [b["example_vector"] for b in found]) if found else []
    for bucket, raw in zip(found, examples, strict=True):
        record = decode_record(raw) if raw is not None else {}
        bucket["example_message"] = record.get("message") or bucket["signature"]
    return {"count": count, "buckets": found}


def _rates(counts: dict[str, int]) -> dict[str, Any]:
    executed = sum(n for s, n in counts.items() if status.is_executed(s))
    return {
        "executed": executed,
        "counts": dict(sorted(counts.items())),
        "pass_rate": counts.get(status.PASS, 0) / executed if executed else None,
    }


def read_agg(redis: Any, keys: Keys, run_id: str) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in redis.hgetall(keys.agg(run_id)).items()}


def failure_buckets(agg: dict[str, str]) -> list[dict[str, Any]]:
    """Failure buckets from a run's aggregates, biggest first: sweepctl's own errors (ERROR), then
    executed failures, then configs that never ran."""
    found: dict[str, dict[str, Counter]] = {}
    by_bucket = Agg.prefix(Agg.BUCKET)
    for name, value in agg.items():
        if name.startswith(by_bucket) and int(value):
            sig, state, op, machine = name[len(by_bucket) :].split(Agg.SEP)
            bucket = found.setdefault(sig, {"statuses": Counter(), "ops": Counter(), "machines": Counter()})
            for field, key in (("statuses", state), ("ops", op), ("machines", machine)):
                bucket[field][key] += int(value)
    rows = []
    for sig, bucket in found.items():
        rows.append(
            {
                "signature_id": sig,
                "signature": agg.get(Agg.field(Agg.BUCKET_TEXT, sig), ""),
                "count": sum(bucket["statuses"].values()),
                "executed": any(status.is_executed(s) for s in bucket["statuses"]),
                "statuses": dict(bucket["statuses"].most_common()),
                "ops": dict(bucket["ops"].most_common()),
                "machines": dict(bucket["machines"].most_common()),
                "example_vector": agg.get(Agg.field(Agg.BUCKET_EXAMPLE, sig), ""),
            }
        )
    return sorted(rows, key=_bucket_order)


def _bucket_order(bucket: dict[str, Any]) -> tuple[bool, bool, int, str]:
    return status.ERROR not in bucket["statuses"], not bucket["executed"], -bucket["count"], bucket["signature"]


def by_model(rows: list[Any], model: str | None = None) -> dict[str, Any]:
    """The op-by-op view per model: every unique config the model traced (config_hash, or the vector
    id for untraced vectors) with its status on each machine it ran on."""
    models: dict[str, dict[tuple[str, str], dict[str, str]]] = {}
    for row in rows:
        for name in row.models or ["(no traced source)"]:
            if model and model not in name:
                continue
            config = (row.vector["op"], row.vector.get("config_hash") or row.id)
            models.setdefault(name, {}).setdefault(config, {})[row.vector["machine"]] = row.status
    out = {}
    for name, configs in sorted(models.items()):
        machines = sorted({m for statuses in configs.values() for m in statuses})
        counts = Counter(s for statuses in configs.values() for s in statuses.values())
        out[name] = {
            "machines": machines,
            "counts": dict(sorted(counts.items())),
            "configs": [
                {"op": op, "config": config, "status": statuses}
                for (op, config), statuses in sorted(configs.items())
            ],
        }
    return out
