"""The coordinator: `sweepctl enqueue`. Expands a selection of the master store into vectors,
host-validates them, records the run, and publishes runnable vectors in chunks to each machine's
queue. Vectors that can never run (NOT_RUN, INVALID) get their final record here and are never
queued, so they never reach an executor.

Idempotent per run id: vectors are stored with HSETNX, and only the ones new to the run are
recorded or published, so re-enqueueing the same run id adds nothing twice.
"""

from __future__ import annotations

import getpass
import importlib.metadata
import json
import socket
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from broker.app import RUN_CHUNK
from broker.keys import Keys
from broker.results import Results, make_record, signature
from sweeps import status
from sweeps.index import load as load_index
from sweeps.suites import UNKNOWN_MACHINE, Expansion, Selection, expand
from sweeps.vector import Encoded
from tracer.errors import InputError
from tracer.store import bulk

MAX_CHUNK = 256  # ~1 s of 4 ms ops per message
SPREAD = 64  # small runs are cut into this many messages per machine, so every worker gets some

_ADD_NEW = """
-- KEYS: the run's vectors hash; ARGV: id1, payload1, id2, payload2...; returns 1 per new vector
local out = {}
for i = 1, #ARGV, 2 do out[#out + 1] = redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
return out
"""


def chunk_size(vectors: int, requested: int | None = None) -> int:
    """Vectors per message: as asked, else enough messages to spread a small run over every worker
    of a machine, growing to MAX_CHUNK for big runs (one message per vector caps enqueue near 900/s)."""
    if requested:
        return requested
    return max(1, min(MAX_CHUNK, -(-vectors // SPREAD)))


def versions() -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "absent"

    return {"sweepctl": version("sweepctl"), "ttnn": version("ttnn"), "celery": version("celery")}


def new_run_id() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def validate(expansion: Expansion, redis: Any, keys: Keys, ttnn_version: str) -> dict[str, str]:
    """Host-validation reasons per vector id (INVALID), each distinct tensor checked once per machine
    and ttnn version; verdicts are cached in Redis so the next enqueue does not pay again."""
    from sweeps.validate import validate_tensors

    wanted: dict[str, dict[str, None]] = {}  # machine -> tensor keys, in first-seen order
    for vector in expansion.vectors:
        if vector.tensors and vector.id not in expansion.not_run:
            machine = wanted.setdefault(vector.machine, {})
            for _, key in vector.tensors:
                machine[key] = None
    verdicts: dict[str, dict[str, str]] = {}
    todo: dict[str, list[str]] = {}
    for machine, tensors in wanted.items():
        names = list(tensors)
        cached = redis.hmget(keys.validation(ttnn_version, machine), names) if names else []
        verdicts[machine] = {n: c.decode() for n, c in zip(names, cached, strict=True) if c is not None}
        todo[machine] = [n for n in names if n not in verdicts[machine]]

    def check(machine: str) -> None:
        names = todo[machine]
        reasons = validate_tensors([orjson.loads(n) for n in names], machine)
        found = {n: (r or "") for n, r in zip(names, reasons, strict=True)}
        verdicts[machine].update(found)
        redis.hset(keys.validation(ttnn_version, machine), mapping=found)

    with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
        list(pool.map(check, [m for m, names in todo.items() if names]))
    invalid: dict[str, str] = {}
    for vector in expansion.vectors:
        if not vector.tensors or vector.id in expansion.not_run:
            continue
        machine = verdicts[vector.machine]
        for slot, key in vector.tensors:
            reason = machine.get(key)
            if reason:
                invalid[vector.id] = f"input {slot}: {reason}"
                break
    return invalid


@dataclass
class Plan:
    """What an enqueue would do, before anything is written (`--dry-run` prints it)."""

    run_id: str
    selection: Selection
    expansion: Expansion
    invalid: dict[str, str]
    per_machine: dict[str, Counter] = field(default_factory=dict)

    def classify(self) -> None:
        for vector in self.expansion.vectors:
            state = (
                status.NOT_RUN
                if vector.id in self.expansion.not_run
                else status.INVALID
                if vector.id in self.invalid
                else "queued"
            )
            self.per_machine.setdefault(vector.machine, Counter())[state] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "vectors": len(self.expansion.vectors),
            "per_machine": {m: dict(c) for m, c in sorted(self.per_machine.items())},
            "ops": sorted({v.op for v in self.expansion.vectors}),
        }


def plan(store_path: str, selection: Selection, redis: Any, keys: Keys, run_id: str | None) -> Plan:
    index = load_index(store_path)
    missing = [op for op in selection.ops or () if op not in index] if selection.suite != "nightly" else []
    if missing:
        raise InputError(store_path, f"no traced configs of {', '.join(missing)} (see `sweepctl store stats`)")
    with bulk():  # 50,000 vectors alive: a cyclic GC pass would rescan them all, and none holds a cycle
        expansion = expand(index, selection)
        invalid = validate(expansion, redis, keys, versions()["ttnn"])
        result = Plan(run_id or new_run_id(), selection, expansion, invalid)
        result.classify()
    return result


def publish(
    app: Any, redis: Any, keys: Keys, plan_: Plan, chunk: int | None = None, expires: float | None = None
) -> dict[str, Any]:
    """Record the run and publish its new vectors; returns what went where."""
    with bulk():
        return _publish(app, redis, keys, plan_, chunk, expires)


def _publish(app: Any, redis: Any, keys: Keys, plan_: Plan, chunk: int | None, expires: float | None) -> dict[str, Any]:
    run_id = plan_.run_id
    vectors = plan_.expansion.vectors
    now = time.time()
    meta = {
        "run_id": run_id,
        "created": now,
        "who": getpass.getuser(),
        "host": socket.gethostname(),
        "selection": plan_.selection.as_dict(),
        "versions": versions(),
        "expires": now + expires if expires else None,
    }
    created = redis.hsetnx(keys.run(run_id), "meta", json.dumps(meta))
    if created:
        redis.zadd(keys.runs(), {run_id: now})
        if meta["expires"]:
            redis.hset(keys.run(run_id), "expires", meta["expires"])
    add_new = redis.register_script(_ADD_NEW)
    pipe = redis.pipeline(transaction=False)  # Redis stores one batch while the next one is sent
    for start in range(0, len(vectors), 1000):  # one script call per 1000 vectors, not one HSETNX each
        flat = [x for v in vectors[start : start + 1000] for x in (v.id, v.payload)]
        add_new(keys=[keys.vectors(run_id)], args=flat, client=pipe)
    fresh = [new for batch in pipe.execute() for new in batch]
    results = Results(redis, keys)
    where = {"backend": "coordinator", "host": meta["host"], "ttnn_version": meta["versions"]["ttnn"]}
    queued: dict[str, list[str]] = {}  # machine -> vector ids (messages carry ids, Redis holds vectors)
    added: Counter = Counter()
    unrun: dict[tuple[str, str, str, str], list[tuple[Encoded, str]]] = {}  # by status, signature, op, machine
    for vector, new in zip(vectors, fresh, strict=True):
        if not new:
            continue
        added[vector.machine] += 1
        reason = plan_.expansion.not_run.get(vector.id) or plan_.invalid.get(vector.id)
        if reason is None:
            queued.setdefault(vector.machine, []).append(vector.id)
            continue
        state = status.NOT_RUN if vector.id in plan_.expansion.not_run else status.INVALID
        unrun.setdefault((state, signature(reason), vector.op, vector.machine), []).append((vector, reason))
    pipe = redis.pipeline(transaction=False)
    for (state, _, _, _), group in unrun.items():
        for start in range(0, len(group), 1000):
            part = group[start : start + 1000]
            first, reason = part[0]
            fields = {"id": first.id, "op": first.op, "machine": first.machine, "config_hash": first.config_hash}
            outcome = {"status": state, "message": reason}
            template = make_record(fields, run_id, 0, outcome, start=now, end=now, **where)
            op = results.finish_unrun_op(template, [(v.id, v.config_hash, why) for v, why in part])
            results.write(run_id, [op], pipe=pipe)
    total = sum(added.values())
    pipe.hincrby(keys.run(run_id), "total", total)
    for machine, count in added.items():
        pipe.hincrby(keys.run(run_id), f"total|{machine}", count)
    pipe.execute()
    chunks = 0
    with app.producer_or_acquire() as producer:
        for machine, items in queued.items():
            if machine == UNKNOWN_MACHINE:
                continue
            size = chunk_size(len(items), chunk)
            for start in range(0, len(items), size):
                ids = items[start : start + size]
                app.send_task(
                    RUN_CHUNK,
                    kwargs={"run_id": run_id, "machine": machine, "ids": ids},
                    producer=producer,
                    kwargsrepr=f"{{run_id: {run_id}, machine: {machine}, {len(ids)} ids from {ids[0]}}}",
                )  # Celery's own repr of 256 ids costs more than the rest of the send
                chunks += 1
    return {
        "run_id": run_id,
        "new_run": bool(created),
        "added": total,
        "already_in_run": len(vectors) - total,
        "chunks": chunks,
        "queued": {m: len(v) for m, v in sorted(queued.items())},
        "per_machine": plan_.as_dict()["per_machine"],
    }


def run_meta(redis: Any, keys: Keys, run_id: str) -> dict[str, Any] | None:
    raw = redis.hget(keys.run(run_id), "meta")
    return json.loads(raw) if raw else None


def require_run(redis: Any, keys: Keys, run_id: str) -> dict[str, Any]:
    """The run's meta, or one clear error for a run id this Redis does not know."""
    meta = run_meta(redis, keys, run_id)
    if meta is None:
        raise InputError(f"run {run_id}", "no such run in this Redis (see `sweepctl runs`)")
    return meta


def latest_run(redis: Any, keys: Keys) -> str | None:
    found = redis.zrevrange(keys.runs(), 0, 0)
    return found[0].decode() if found else None
