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
from sweeps.profiles import UNKNOWN_MACHINE
from sweeps.suites import Expansion, Selection, expand
from sweeps.vector import Encoded, decode
from tracer.errors import InputError
from tracer.store import bulk

MAX_CHUNK = 512  # ~2 s of 4 ms ops per message
SPREAD = 64  # small runs are cut into this many messages per machine, so every worker gets some

ENQUEUE_LOCK_TTL = 600  # s: an enqueue that died frees its run id after this
PUBLISHING = "publishing"  # run hash field: set while an enqueue stores and queues; left behind when it dies
_ADD_NEW = """
-- KEYS: the run's vectors hash; ARGV: id1, payload1, id2, payload2...; returns 1 per new vector
local out = {}
for i = 1, #ARGV, 2 do out[#out + 1] = redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
return out
"""
_UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


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
    and ttnn version; verdicts are cached in Redis (by tensor digest) so the next enqueue does not
    pay again."""
    from sweeps.validate import validate_tensors

    table = expansion.tensors
    runnable = [v for v in expansion.vectors if v.tensors and v.id not in expansion.not_run]
    wanted: dict[str, dict[int, None]] = {}  # machine -> table positions, in first-seen order
    for vector in runnable:
        wanted.setdefault(vector.machine, {}).update(dict.fromkeys(vector.tensors[1::2]))
    reasons: dict[str, list[bytes | None]] = {}  # machine -> reason by table position (b"" = valid)
    todo: dict[str, list[int]] = {}
    for machine, positions in wanted.items():
        at = list(positions)
        cached = redis.hmget(keys.validation(ttnn_version, machine), table.digests_of(at))
        found = reasons[machine] = [None] * len(table)
        for i, reason in zip(at, cached, strict=True):
            found[i] = reason
        todo[machine] = [i for i, reason in zip(at, cached, strict=True) if reason is None]

    def check(machine: str) -> None:
        at = todo[machine]
        checked = [(r or "").encode() for r in validate_tensors([orjson.loads(table.keys[i]) for i in at], machine)]
        for i, reason in zip(at, checked, strict=True):
            reasons[machine][i] = reason
        mapping = dict(zip(table.digests_of(at), checked, strict=True))
        redis.hset(keys.validation(ttnn_version, machine), mapping=mapping)

    with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
        list(pool.map(check, [m for m, at in todo.items() if at]))
    invalid: dict[str, str] = {}
    for vector in runnable:
        found, flat = reasons[vector.machine], vector.tensors
        for n in range(1, len(flat), 2):
            if found[flat[n]]:
                invalid[vector.id] = f"input {flat[n - 1]}: {found[flat[n]].decode()}"
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
    seconds: dict[str, float] = field(default_factory=dict)  # per phase: where an enqueue spends its time

    def never_run(self) -> set[str]:
        """Ids of the vectors decided here (NOT_RUN, INVALID): they never reach a queue."""
        return self.expansion.not_run.keys() | self.invalid.keys()

    def classify(self) -> None:
        vectors, not_run = self.expansion.vectors, self.expansion.not_run
        for machine, count in Counter(v.machine for v in vectors).items():
            self.per_machine[machine] = Counter(queued=count)
        never = self.never_run()
        for vector in (v for v in vectors if v.id in never):
            counts = self.per_machine[vector.machine]
            counts["queued"] -= 1
            counts[status.NOT_RUN if vector.id in not_run else status.INVALID] += 1
        for counts in self.per_machine.values():
            if not counts["queued"]:
                del counts["queued"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "vectors": len(self.expansion.vectors),
            "per_machine": {m: dict(c) for m, c in sorted(self.per_machine.items())},
            "ops": sorted({v.op for v in self.expansion.vectors}),
        }


def plan(store_path: str, selection: Selection, redis: Any, keys: Keys, run_id: str | None) -> Plan:
    started = time.perf_counter()
    index = load_index(store_path)
    missing = [op for op in selection.ops or () if op not in index] if selection.suite != "nightly" else []
    if missing:
        raise InputError(store_path, f"no traced configs of {', '.join(missing)} (see `sweepctl store stats`)")
    with bulk():  # 50,000 vectors alive: a cyclic GC pass would rescan them all, and none holds a cycle
        expansion = expand(index, selection)
        expanded = time.perf_counter()
        invalid = validate(expansion, redis, keys, versions()["ttnn"])
        result = Plan(run_id or new_run_id(), selection, expansion, invalid)
        result.classify()
    result.seconds = {"expand": round(expanded - started, 3), "validate": round(time.perf_counter() - expanded, 3)}
    return result


def publish(
    app: Any, redis: Any, keys: Keys, plan_: Plan, chunk: int | None = None, expires: float | None = None
) -> dict[str, Any]:
    """Record the run and publish its new vectors; returns what went where. One enqueue of a run
    id at a time: a second one while the first is still writing is refused (nothing is written)."""
    token = uuid.uuid4().hex
    lock = keys.enqueuing(plan_.run_id)
    if not redis.set(lock, token, nx=True, ex=ENQUEUE_LOCK_TTL):
        raise InputError(f"run {plan_.run_id}", "another enqueue of this run is still writing it; wait for it to end")
    started = time.perf_counter()
    try:
        with bulk():
            return _publish(app, redis, keys, plan_, chunk, expires)
    finally:
        redis.eval(_UNLOCK, 1, lock, token)
        plan_.seconds["publish"] = round(time.perf_counter() - started, 3)


def _upload(redis: Any, keys: Keys, run_id: str, vectors: list[Encoded], new_run: bool) -> list[int] | None:
    """Store the run's vectors; 1 per vector new to the run, None when all are. A run this enqueue
    just created (under its lock) holds none yet: plain HSET, half the Redis time of the HSETNX
    script re-enqueues use."""
    pipe = redis.pipeline(transaction=False)  # Redis stores one batch while the next one is sent
    add_new = None if new_run else redis.register_script(_ADD_NEW)
    for start in range(0, len(vectors), 1000):  # one command per 1000 vectors
        flat = [x for v in vectors[start : start + 1000] for x in (v.id, v.payload)]
        if add_new is None:
            pipe.execute_command("HSET", keys.vectors(run_id), *flat)
        else:
            add_new(keys=[keys.vectors(run_id)], args=flat, client=pipe)
    replies = pipe.execute()
    return None if add_new is None else [new for batch in replies for new in batch]


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
    interrupted = not redis.hsetnx(keys.run(run_id), PUBLISHING, now)  # left by an enqueue that died
    created = redis.hsetnx(keys.run(run_id), "meta", json.dumps(meta))
    if created:
        redis.zadd(keys.runs(), {run_id: now})
        if meta["expires"]:
            redis.hset(keys.run(run_id), "expires", meta["expires"])
    fresh = _upload(redis, keys, run_id, vectors, bool(created))
    queued, added, unrun = _sort_new(plan_, fresh)
    results = Results(redis, keys)
    where = {"backend": "coordinator", "host": meta["host"], "ttnn_version": meta["versions"]["ttnn"]}
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
    requeued = _unqueued(redis, keys, run_id, queued) if interrupted else {}
    for machine, ids in requeued.items():
        queued.setdefault(machine, []).extend(ids)
    chunks = 0
    with app.producer_or_acquire() as producer, producer.batch():  # one pipeline, not a round trip each
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
                )  # Celery's own repr of 512 ids costs more than the rest of the send
                chunks += 1
    redis.hdel(keys.run(run_id), PUBLISHING)
    return {
        "run_id": run_id,
        "new_run": bool(created),
        "added": total,
        "already_in_run": len(vectors) - total,
        "requeued": sum(map(len, requeued.values())),
        "chunks": chunks,
        "queued": {m: len(v) for m, v in sorted(queued.items())},
        "per_machine": plan_.as_dict()["per_machine"],
    }


def _unqueued(redis: Any, keys: Keys, run_id: str, queued: dict[str, list[str]]) -> dict[str, list[str]]:
    """The vectors an enqueue stored in the run and died before queueing: no final record, no
    attempt started, and not queued by this enqueue; by machine (from their payloads). Queued
    again, so a crashed enqueue never leaves a run that cannot finish. (Had its last messages gone
    out after all, a vector may run twice; its record is written once.)"""
    ids = [i.decode() for i in redis.hkeys(keys.vectors(run_id))]
    ours = {i for items in queued.values() for i in items}
    pipe = redis.pipeline(transaction=False)
    pipe.hmget(keys.final(run_id), ids)
    pipe.hmget(keys.attempts(run_id), ids)
    finals, attempts = pipe.execute() if ids else ([], [])
    untouched = (i for i, done, tried in zip(ids, finals, attempts, strict=True) if done is None and tried is None)
    lost = [i for i in untouched if i not in ours]
    found: dict[str, list[str]] = {}
    for vid, payload in zip(lost, redis.hmget(keys.vectors(run_id), lost) if lost else [], strict=True):
        found.setdefault(decode(payload)["machine"], []).append(vid)
    return found


def _sort_new(
    plan_: Plan, fresh: list[int] | None
) -> tuple[dict[str, list[str]], Counter, dict[tuple[str, str, str, str], list[tuple[Encoded, str]]]]:
    """The vectors new to the run (`fresh`: 1 per new vector; None: all of them): ids to queue per
    machine, counts per machine, and the ones that never run grouped by (status, signature, op,
    machine) for the bulk record op."""
    vectors = plan_.expansion.vectors
    if fresh is not None:
        vectors = [v for v, new in zip(vectors, fresh, strict=True) if new]
    queued: dict[str, list[str]] = {}  # machine -> vector ids (messages carry ids, Redis holds vectors)
    unrun: dict[tuple[str, str, str, str], list[tuple[Encoded, str]]] = {}
    not_run, invalid, never = plan_.expansion.not_run, plan_.invalid, plan_.never_run()
    for vector in vectors:
        if vector.id not in never:
            queued.setdefault(vector.machine, []).append(vector.id)
            continue
        reason = not_run.get(vector.id) or invalid[vector.id]
        state = status.NOT_RUN if vector.id in not_run else status.INVALID
        unrun.setdefault((state, signature(reason), vector.op, vector.machine), []).append((vector, reason))
    return queued, Counter(v.machine for v in vectors), unrun


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
