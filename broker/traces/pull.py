"""`sweepctl store pull`: finished trace results from Redis into the master store, each trace uid once.

Under the store's lock (tracer/store.py `locked`): load, merge every finished result the store has
not merged yet (its `metadata.sweepctl_merged_traces` names them), save atomically. So a pull that
runs again, a redelivered job, or two pulls at once never count a trace twice nor lose one. Only
passed tests' configs are in a result (the worker keeps nothing else); a failed, hung or lost job
is recorded as pulled with nothing merged. What each trace added (new and known configs) is noted on
its job in Redis for `models status`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from broker.keys import Keys
from broker.traces import jobs as tracejobs
from tracer.master import load_json
from tracer.store import MasterStore, MergeSummary, bulk, locked, merged_traces


@dataclass
class Pulled:
    summary: MergeSummary = field(default_factory=MergeSummary)
    traces: list[dict[str, Any]] = field(default_factory=list)  # per trace merged now: uid, model, machine, ...
    already: int = 0  # finished traces the store had merged before
    undecodable: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**self.summary.as_dict(), "traces": self.traces, "already_merged": self.already,
                "undecodable": self.undecodable}  # fmt: skip


def finished(redis: Any, keys: Keys, uids: list[str] | None = None) -> list[str]:
    """Trace uids with a result, oldest first (all of them, or those of `uids`)."""
    rows = tracejobs.jobs(redis, keys, uids)
    return [r["uid"] for r in rows if r.get("state") == tracejobs.DONE]


def pull(redis: Any, keys: Keys, store_path: str, uids: list[str] | None = None) -> Pulled:
    """Merge the finished results the store lacks (of `uids`, or all); see the module doc."""
    out = Pulled()
    done = finished(redis, keys, uids)
    with locked(store_path), bulk():
        data = load_json(store_path) if os.path.exists(store_path) else None
        merged = merged_traces(data)
        todo = [uid for uid in done if uid not in merged]
        out.already = len(done) - len(todo)
        if not todo:  # nothing new: the store is not built, let alone written
            return out
        store = MasterStore.from_data(data, store_path) if data is not None else MasterStore()
        del data
        for uid in todo:
            raw = redis.get(keys.trace_result(uid))
            try:
                result = tracejobs.decode_result(raw) if raw is not None else None
            except ValueError:
                result = None
            if result is None:
                out.undecodable.append(uid)
                continue
            summary = store.merge(tracejobs.result_entries(result))
            for op, n in summary.new.items():
                out.summary.new[op] += n
            for op, n in summary.known.items():
                out.summary.known[op] += n
            store.merged_traces.add(uid)
            store.trace_uid = uid  # metadata.trace_uid: the last trace run merged, as tt-metal's tracer records
            out.traces.append({"uid": uid, "model": result["model"], "machine": result["machine"],
                               "outcome": result["outcome"], "new": sum(summary.new.values()),
                               "known": sum(summary.known.values())})  # fmt: skip
        if out.traces:
            store.save(store_path)
    note = {"store": os.path.abspath(store_path), "at": time.time()}
    pipe = redis.pipeline(transaction=False)
    for row in out.traces:
        pipe.hset(keys.trace(row["uid"]), "merged", json.dumps({**note, "new": row["new"], "known": row["known"]}))
    if out.traces:
        pipe.execute()
    return out
