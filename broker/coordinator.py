"""The coordinator: `sweepctl enqueue`. Expands a selection of the master store into vectors,
host-validates them, records the run, and publishes runnable vectors in chunks to each machine's
queue. Vectors that can never run (NOT_RUN, INVALID) get their final record here and are never
queued, so they never reach an executor; with `--reuse BASE`, vectors that passed in BASE on the
same backend, ttnn version and machine are booked REUSED instead of queued.

Idempotent per run id: vectors are stored with HSETNX, and only the ones new to the run are
recorded or published, so re-enqueueing the same run id adds nothing twice. The run's size is the
vectors it stores: each batch of vectors and its per-machine count are written in one script, so
no crash can leave them disagreeing. One enqueue of a run id at a time holds its lock (owner pid,
host and a heartbeat); a lock whose owner is gone is taken over at once, and the enqueue that
takes it finishes the dead one's work: it queues (or books) every stored vector with no final and
no attempt.
"""

from __future__ import annotations

import getpass
import importlib.metadata
import json
import os
import socket
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import redis.exceptions as redis_errors
from kombu.exceptions import OperationalError

from broker import embedded
from broker.app import RUN_CHUNK
from broker.keys import Keys
from broker.results import Results, decode_record, make_record, parse_final, signature
from sweeps import status
from sweeps.index import load as load_index
from sweeps.profiles import UNKNOWN_MACHINE
from sweeps.suites import DRY_RUN_CEILING, Expansion, Selection, count_all_cases, expand
from sweeps.vector import Encoded, decode
from tracer.errors import InputError
from tracer.store import bulk

MAX_CHUNK = 512  # ~2 s of 4 ms ops per message
CHUNK_LIMIT = 4096  # --chunk at most: a chunk runs on one worker, and a lost worker's chunk is redone
SPREAD = 64  # small runs are cut into this many messages per machine, so every worker gets some

LOCK_BEAT = 2.0  # s between the heartbeats that renew an enqueue's lock
LOCK_TTL = 15  # s: Redis drops a lock whose heartbeat stopped
LOCK_MISSED = 3  # heartbeats missed: the owner is gone, its lock is taken over without waiting for the TTL
PUBLISHING = "publishing"  # run hash field: set while an enqueue stores and queues; left behind when it dies
CONNECTION_LOST = (redis_errors.ConnectionError, redis_errors.TimeoutError, OperationalError)
_STORE_MISSING = """
-- KEYS: the run's vectors hash, the run hash; ARGV: machine, id1, payload1, ...; stores the vectors
-- new to the run and counts them in the machine's total at once; returns 1 per new vector
local out, n = {}, 0
for i = 2, #ARGV, 2 do
  local new = redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  out[#out + 1] = new
  n = n + new
end
if n > 0 then redis.call('HINCRBY', KEYS[2], 'total|' .. ARGV[1], n) end
return out
"""
_SWAP = """
-- compare and set: the lock still holds ARGV[1] -> ARGV[2] with a TTL of ARGV[3] s ('' deletes it)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
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
    over_cap: int | None = None  # a dry run above the all_cases cap: the --max-vectors the real one needs

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
        out = {
            "run_id": self.run_id,
            "vectors": len(self.expansion.vectors),
            "per_machine": {m: dict(c) for m, c in sorted(self.per_machine.items())},
            "ops": sorted({v.op for v in self.expansion.vectors}),
        }
        if self.over_cap is not None:
            out["over_cap"] = {"cap": self.selection.cap, "max_vectors_needed": self.over_cap}
        return out


def _described(selection: Selection) -> str:
    said = [f"--op {','.join(selection.ops)}" if selection.ops else "every op"]
    said += [f"--{name} {value}" for name, value in (("model", selection.model), ("machine", selection.machine))
             if value]  # fmt: skip
    said += [f"-k {selection.substring}"] if selection.substring else []
    return f"{' '.join(said)} in suite {selection.suite}"


def plan(
    store_path: str, selection: Selection, redis: Any, keys: Keys, run_id: str | None, dry_run: bool = False
) -> Plan:
    """Expand and host-validate the selection. A dry run above the all_cases cap expands it all
    (up to DRY_RUN_CEILING), so it counts exactly what the enqueue with the cap raised would queue."""
    started = time.perf_counter()
    index = load_index(store_path)
    missing = [op for op in selection.ops or () if op not in index] if selection.suite != "nightly" else []
    if missing:
        raise InputError(store_path, f"no traced configs of {', '.join(missing)} (see `sweepctl store stats`)")
    over_cap = None
    with bulk():  # 50,000 vectors alive: a cyclic GC pass would rescan them all, and none holds a cycle
        if dry_run and selection.suite == "all_cases":
            wanted = sum(count_all_cases(index, selection).values())
            if wanted > selection.cap:
                if wanted > DRY_RUN_CEILING:
                    raise InputError(
                        "--dry-run", f"{wanted:,} all_cases vectors: more than a dry run expands "
                        f"({DRY_RUN_CEILING:,}); narrow the selection with --op, --model or -k",
                    )  # fmt: skip
                over_cap = wanted
        expansion = expand(index, replace(selection, cap=over_cap) if over_cap else selection)
        if not expansion.vectors:
            raise InputError("selection", f"nothing to run: no config matches {_described(selection)}; no run made")
        expanded = time.perf_counter()
        invalid = validate(expansion, redis, keys, versions()["ttnn"])
        result = Plan(run_id or new_run_id(), selection, expansion, invalid, over_cap=over_cap)
        result.classify()
    result.seconds = {"expand": round(expanded - started, 3), "validate": round(time.perf_counter() - expanded, 3)}
    return result


# --- the enqueue lock ---------------------------------------------------------------------------


def lock_owner(redis: Any, key: str) -> tuple[bytes | None, dict[str, Any] | None, bool]:
    """The lock's raw value, its owner (pid, host, started, beat; None when absent or not ours to
    read) and whether that owner is gone: a process of this host that no longer runs, or a heartbeat
    LOCK_MISSED beats late (read from the key's TTL, so no two hosts' clocks are compared)."""
    pipe = redis.pipeline(transaction=False)
    pipe.get(key)
    pipe.pttl(key)
    held, ttl_ms = pipe.execute()
    if held is None:
        return None, None, True
    try:
        owner = json.loads(held)
        pid, host = int(owner["pid"]), str(owner["host"])
    except (ValueError, TypeError, KeyError):
        return held, None, False  # an older sweepctl's lock: its TTL frees it
    lapsed = 0 <= ttl_ms < (LOCK_TTL - LOCK_MISSED * LOCK_BEAT) * 1000
    return held, owner, lapsed or (host == socket.gethostname() and embedded.identify(pid) is None)


class EnqueueLock:
    """The one enqueue writing a run. Its value names the owner (pid, host) and a heartbeat thread
    renews it every LOCK_BEAT s; another enqueue takes over a lock whose owner is gone at once."""

    def __init__(self, redis: Any, key: str) -> None:
        self.redis = redis
        self.key = key
        self.took_over: dict[str, Any] | None = None  # the dead owner whose lock this enqueue took
        self._swap = redis.register_script(_SWAP)
        self._started = time.time()
        self._token = uuid.uuid4().hex
        self._value = ""
        self._mutex = threading.Lock()  # a renewal and the release never interleave
        self._stop = threading.Event()
        self._beats = threading.Thread(target=self._beat, name="enqueue-lock", daemon=True)

    def _fresh(self) -> str:
        owner = {"token": self._token, "pid": os.getpid(), "host": socket.gethostname(), "started": self._started}
        return json.dumps({**owner, "beat": time.time()})

    def acquire(self, what: str) -> None:
        value = self._fresh()
        while not self.redis.set(self.key, value, nx=True, ex=LOCK_TTL):
            held, owner, gone = lock_owner(self.redis, self.key)
            if held is None:
                continue  # it lapsed between the two reads
            if not gone:
                who = f" (pid {owner['pid']} on {owner['host']})" if owner else ""
                raise InputError(what, f"another enqueue of this run is still writing it{who}; wait for it to end")
            if self._swap(keys=[self.key], args=[held, value, LOCK_TTL]):
                self.took_over = owner
                break
            # another enqueue took the dead owner's lock first: look again
        self._value = value
        self._beats.start()

    def _beat(self) -> None:
        while not self._stop.wait(LOCK_BEAT):
            with self._mutex:
                value = self._fresh()
                try:
                    if self._swap(keys=[self.key], args=[self._value, value, LOCK_TTL]):
                        self._value = value
                except redis_errors.RedisError:
                    pass  # Redis is away: the enqueue itself fails and says so; the lock lapses

    def release(self) -> None:
        self._stop.set()
        with self._mutex:
            try:
                self._swap(keys=[self.key], args=[self._value, "", LOCK_TTL])
            except redis_errors.RedisError:
                pass  # Redis is away: the lock lapses with its TTL, or is taken over as its owner's


def enqueue_state(redis: Any, keys: Keys, run_id: str) -> str | None:
    """None, "writing" (an enqueue holds the run's lock) or "interrupted" (an enqueue stored part of
    the run and died: the next enqueue of the run id finishes it). Only for a run hash that has
    the PUBLISHING marker."""
    _, _, gone = lock_owner(redis, keys.enqueuing(run_id))
    return "interrupted" if gone else "writing"


# --- publish ------------------------------------------------------------------------------------


@dataclass
class Reuse:
    """`enqueue --reuse BASE`: the backend each machine type's live workers run (a machine whose
    live workers are absent or disagree reuses nothing); the ttnn version is this coordinator's."""

    base: str
    backends: dict[str, str]


def publish(
    app: Any, redis: Any, keys: Keys, plan_: Plan, chunk: int | None = None, expires: float | None = None,
    reuse: Reuse | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Record the run and publish its new vectors; returns what went where. One enqueue of a run
    id at a time: a second one while the first is still writing is refused (nothing is written).
    Redis lost on the way is one InputError: what was stored stays, and the next enqueue of the
    run id finishes it."""
    lock = EnqueueLock(redis, keys.enqueuing(plan_.run_id))
    started = time.perf_counter()
    try:
        lock.acquire(f"run {plan_.run_id}")
        try:
            with bulk():
                summary = _publish(app, redis, keys, plan_, chunk, expires, reuse)
        finally:
            lock.release()
    except CONNECTION_LOST as exc:
        raise InputError(
            "redis",
            f"connection lost while enqueueing run {plan_.run_id} ({exc}); what was stored stays: once Redis is "
            f"back, `sweepctl enqueue --run-id {plan_.run_id}` with the same selection finishes it",
        ) from None
    finally:
        plan_.seconds["publish"] = round(time.perf_counter() - started, 3)
    if lock.took_over:
        summary["took_over_lock_of"] = {k: lock.took_over.get(k) for k in ("pid", "host", "started")}
    return summary


def _upload(redis: Any, keys: Keys, run_id: str, vectors: list[Encoded], new_run: bool) -> list[Encoded]:
    """Store the run's vectors, each batch with its machine's count of them at once, so the run's
    totals are always the vectors it stores; returns the ones new to the run. A run this enqueue
    just created (under its lock) holds none yet: a batch is a plain HSET and its count in one
    MULTI, a third of the Redis time of the HSETNX script a re-enqueue needs."""
    if len({v.id for v in vectors}) < len(vectors):  # distinct ids: a new run's counts are its batches' sizes
        vectors = list({v.id: v for v in vectors}.values())
    by_machine: dict[str, list[Encoded]] = {}
    for vector in vectors:
        by_machine.setdefault(vector.machine, []).append(vector)
    pipe = redis.pipeline(transaction=False)  # Redis stores one batch while the next one is sent
    store = None if new_run else redis.register_script(_STORE_MISSING)
    batches = []
    for machine, items in by_machine.items():
        for start in range(0, len(items), 1000):  # one command per 1000 vectors
            batch = items[start : start + 1000]
            batches.append(batch)
            flat = [x for v in batch for x in (v.id, v.payload)]
            if store is not None:
                store(keys=[keys.vectors(run_id), keys.run(run_id)], args=[machine, *flat], client=pipe)
                continue
            pipe.execute_command("MULTI")
            pipe.execute_command("HSET", keys.vectors(run_id), *flat)
            pipe.execute_command("HINCRBY", keys.run(run_id), f"total|{machine}", len(batch))
            pipe.execute_command("EXEC")
    replies = pipe.execute()
    if store is None:
        return vectors
    pairs = (zip(batch, flags, strict=True) for batch, flags in zip(batches, replies, strict=True))
    return [v for pair in pairs for v, new in pair if new]


def _publish(
    app: Any, redis: Any, keys: Keys, plan_: Plan, chunk: int | None, expires: float | None, reuse: Reuse | None
) -> dict[str, Any]:
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
    pipe = redis.pipeline(transaction=True)  # the run, its listing and its expiry appear together
    pipe.hsetnx(keys.run(run_id), PUBLISHING, now)
    pipe.hsetnx(keys.run(run_id), "meta", json.dumps(meta))
    pipe.zadd(keys.runs(), {run_id: now}, nx=True)
    if meta["expires"]:  # the first enqueue of the run that gives --expires sets it
        pipe.hsetnx(keys.run(run_id), "expires", meta["expires"])
    pipe.hget(keys.run(run_id), "expires")
    marked, created, *_, expiry = pipe.execute()
    interrupted = not marked  # the PUBLISHING marker of an enqueue that died
    if expiry is not None:  # expire_due books what never ran once it is due, worker or not
        redis.zadd(keys.expiring(), {run_id: float(expiry)})
    new = _upload(redis, keys, run_id, vectors, bool(created))
    handled, elsewhere = new, {}
    if interrupted:  # what the dead enqueue stored and never queued nor booked: this one does it
        planned = {v.id: v for v in vectors}
        lost = _unfinished(redis, keys, run_id, exclude={v.id for v in new})
        handled = new + [planned[i] for i in lost if i in planned]
        elsewhere = _machines_of(redis, keys, run_id, [i for i in lost if i not in planned])
    queued, unrun = _sort(plan_, handled)
    results = Results(redis, keys)
    reused, reuse_skipped = _book_reused(redis, keys, results, run_id, reuse, queued) if reuse else ({}, {})
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
    pipe.execute()
    for machine, ids in elsewhere.items():
        queued.setdefault(machine, []).extend(ids)
    chunks = 0
    with app.producer_or_acquire() as producer, producer.batch():  # one pipeline, not a round trip each
        for machine, items in queued.items():
            if machine == UNKNOWN_MACHINE or not items:
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
    summary = {
        "run_id": run_id,
        "new_run": bool(created),
        "added": len(new),
        "already_in_run": len(vectors) - len(new),
        "requeued": len(handled) - len(new) + sum(map(len, elsewhere.values())),
        "chunks": chunks,
        "queued": {m: len(v) for m, v in sorted(queued.items()) if v},
        "per_machine": plan_.as_dict()["per_machine"],
    }
    if reuse:
        summary["reused"] = dict(sorted(reused.items()))
        summary["reuse_skipped"] = reuse_skipped
    return summary


def _unfinished(redis: Any, keys: Keys, run_id: str, exclude: set[str]) -> list[str]:
    """The run's stored vectors with no final record and no attempt started, but those in
    `exclude`: an enqueue that died stored them and never queued or booked them. (Had its last
    messages gone out after all, a vector may run twice; its record is written once.)"""
    ids = [i.decode() for i in redis.hkeys(keys.vectors(run_id))]
    if not ids:
        return []
    pipe = redis.pipeline(transaction=False)
    pipe.hmget(keys.final(run_id), ids)
    pipe.hmget(keys.attempts(run_id), ids)
    finals, attempts = pipe.execute()
    return [
        i for i, done, tried in zip(ids, finals, attempts, strict=True)
        if done is None and tried is None and i not in exclude
    ]  # fmt: skip


def _machines_of(redis: Any, keys: Keys, run_id: str, ids: list[str]) -> dict[str, list[str]]:
    """Stored vectors by machine, read from their payloads."""
    found: dict[str, list[str]] = {}
    for vid, payload in zip(ids, redis.hmget(keys.vectors(run_id), ids) if ids else [], strict=True):
        found.setdefault(decode(payload)["machine"], []).append(vid)
    return found


def _sort(
    plan_: Plan, vectors: list[Encoded]
) -> tuple[dict[str, list[str]], dict[tuple[str, str, str, str], list[tuple[Encoded, str]]]]:
    """The vectors this enqueue handles: ids to queue per machine, grouped by the mesh they open
    (a device host reopens its mesh at every switch: tens of seconds on a Galaxy), and the ones that
    never run grouped by (status, signature, op, machine) for the bulk record op."""
    meshes: dict[str, dict[Any, list[str]]] = {}  # machine -> open key -> vector ids, each in store order
    unrun: dict[tuple[str, str, str, str], list[tuple[Encoded, str]]] = {}
    not_run, invalid, never = plan_.expansion.not_run, plan_.invalid, plan_.never_run()
    for vector in vectors:
        if vector.id not in never:
            meshes.setdefault(vector.machine, {}).setdefault(vector.opens, []).append(vector.id)
            continue
        reason = not_run.get(vector.id) or invalid[vector.id]
        state = status.NOT_RUN if vector.id in not_run else status.INVALID
        unrun.setdefault((state, signature(reason), vector.op, vector.machine), []).append((vector, reason))
    queued = {machine: [vid for ids in groups.values() for vid in ids] for machine, groups in meshes.items()}
    return queued, unrun


def _book_reused(
    redis: Any, keys: Keys, results: Results, run_id: str, reuse: Reuse, queued: dict[str, list[str]]
) -> tuple[dict[str, int], dict[str, str]]:
    """Book REUSED (and take off `queued`) every vector whose final in the base run is a PASS on the
    backend this machine's live workers run, this ttnn version and the same machine type: never a
    failed, hung, crashed or infra result. Returns the counts per machine, and why machines reused
    nothing."""
    ttnn, base = versions()["ttnn"], reuse.base
    skipped = {m: "no live worker says which backend would run it" for m in queued if m not in reuse.backends}
    wanted = [i for m, ids in queued.items() if m in reuse.backends for i in ids]
    finals = redis.hmget(keys.final(base), wanted) if wanted else []
    passed = [i for i, f in zip(wanted, finals, strict=True) if f is not None and parse_final(f)[0] == status.PASS]
    tried = redis.hmget(keys.attempts(base), passed) if passed else []
    fields = [keys.record_field(i, n) for i, last in zip(passed, tried, strict=True) for n in range(int(last or 0) + 1)]
    records = [decode_record(r) for r in redis.hmget(keys.records(base), fields) if r is not None] if fields else []
    chosen: dict[str, dict[str, Any]] = {}
    for record in records:  # the PASS attempt of each (later attempts overwrite earlier ones)
        if record["status"] == status.PASS:
            chosen[record["vector"]] = record
    reused: dict[str, int] = {}
    booked: set[str] = set()
    ops = []
    for vid, record in chosen.items():
        machine = record["machine"]
        if record["backend"] != reuse.backends.get(machine) or record.get("ttnn_version") != ttnn:
            continue
        message = f"passed in run {base} (attempt {record['attempt']}, {record['backend']}, ttnn {ttnn})"
        outcome = {k: record.get(k) for k in ("pcc", "threshold", "e2e_ms", "device_perf")}
        vector = {"id": vid, "op": record["op"], "machine": machine, "config_hash": record.get("config_hash")}
        where = {k: record.get(k) for k in ("backend", "worker", "host", "devices", "ttnn_version", "start", "end")}
        mine = make_record(vector, run_id, 0, {**outcome, "status": status.REUSED, "message": message}, **where)
        mine["signature"] = ""  # a reused PASS is no failure bucket
        ops.append(results.finish_op(mine))
        booked.add(vid)
        reused[machine] = reused.get(machine, 0) + 1
    for start in range(0, len(ops), 1000):
        results.write(run_id, ops[start : start + 1000])
    for machine in reused:
        queued[machine] = [i for i in queued[machine] if i not in booked]
    return reused, skipped


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
