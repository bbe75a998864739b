"""`sweepctl models status`: per registered model and machine type, its last trace job (when, ttnn
version, outcome), what that trace added to the store (new and known configs, as `store pull`
noted), and whether the model's configs on that machine have had a sweep run since."""

from __future__ import annotations

import json
from typing import Any

from broker.keys import Keys
from broker.results import vector_fields
from broker.traces import jobs as tracejobs
from tracer.registry import Registry
from tracer.store import MasterStore


def _swept_since(redis: Any, keys: Keys, since: float, cache: dict[str, set[tuple[str, str]]]) -> set[tuple[str, str]]:
    """(machine, config_hash) of every vector of the runs created after `since`."""
    found: set[tuple[str, str]] = set()
    for run_id in redis.zrangebyscore(keys.runs(), since, "+inf"):
        run = run_id.decode()
        if run not in cache:
            cache[run] = set()
            for _, payload in redis.hscan_iter(keys.vectors(run), count=1000):
                _, machine, digest = vector_fields(payload, "")
                if digest:
                    cache[run].add((machine, digest))
        found |= cache[run]
    return found


def model_status(redis: Any, keys: Keys, registry: Registry, store: MasterStore | None) -> list[dict[str, Any]]:
    jobs = tracejobs.jobs(redis, keys)
    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for job in jobs:
        by_pair.setdefault((job.get("model", ""), job.get("machine", "")), []).append(job)
    pairs = [(e.name, m) for e in registry.entries for m in e.machines]
    pairs += sorted(p for p in by_pair if p not in set(pairs))
    hashes: dict[str, set[str]] = {}  # trace uid -> config hashes of the store it contributed to
    if store is not None:
        for _, config in store.entries():
            for run in config["executions"]:
                if run.get("trace_uid"):
                    hashes.setdefault(run["trace_uid"], set()).add(config["config_hash"])
    cache: dict[str, set[tuple[str, str]]] = {}
    rows = []
    for model, machine in pairs:
        history = by_pair.get((model, machine), [])
        registered = any(e.name == model and machine in e.machines for e in registry.entries)
        row: dict[str, Any] = {"model": model, "machine": machine, "registered": registered}
        if not history:
            rows.append({**row, "state": "never", "outcome": None, "configs": None, "swept": None})
            continue
        last = history[-1]
        result = tracejobs.result(redis, keys, last["uid"]) if last.get("state") == tracejobs.DONE else None
        merged = json.loads(last["merged"]) if last.get("merged") else None
        configs = set().union(*(hashes.get(j["uid"], set()) for j in history))
        when = float(last.get("finished") or last.get("enqueued") or 0)
        swept = None
        if configs and result is not None:
            covered = {d for m, d in _swept_since(redis, keys, when, cache) if m == machine}
            swept = {"configs": len(configs), "covered": len(configs & covered)}
        rows.append({**row, "uid": last["uid"], "state": last.get("state"), "when": when,
                     "outcome": result.get("outcome") if result else None,
                     "ttnn_version": result.get("ttnn_version") if result else None,
                     "merged": merged, "configs": len(configs), "swept": swept})  # fmt: skip
    return rows
