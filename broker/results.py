"""Attempts and records: one record per attempt, written once, with the run's aggregates updated
in the same atomic step (a Lua script), so a report never scans results.

`claim` starts attempts right before they run, atomically per vector: it refuses a vector that is
final, held by another worker's lease, or whose run is canceled, and otherwise bumps the attempt
counter and takes a lease (a TTL the heartbeat renews). So a vector starts at most once per
attempt number, whatever copies of its chunk are around. `finish` writes the attempt's record
with HSETNX and, the first time a vector reaches a final status, bumps the counters; a record for a
vector that is final already is dropped (a record never contradicts its vector's final status).
All steps are idempotent, so a writer may resend them after a lost connection.
Aggregates (`{p}:run:R:agg` fields):

  done, t_first, t_last              vectors with a final status; first/last finish (unix s)
  s|STATUS  os|OP|STATUS  ms|MACHINE|STATUS      counts
  om|MACHINE|OP|STATUS                            counts per machine and op
  fb|SIG|STATUS|OP|MACHINE                        failure buckets: final non-PASS vectors per signature
  st|SIG  sx|SIG                                  a bucket's signature text and one example vector
  pmin|OP                            lowest PCC of an executed vector
  ph|OP|B                            PCC histogram, B = floor(10 * -log10(1 - pcc)), capped at 120
  b|BACKEND                          executed vectors per backend (emulated results say so)
  eh|OP|B                            e2e histogram, B = floor(8 * log2(ms * 1000)) (microseconds)
The final hash holds `STATUS|pcc|e2e_ms|SIG` per vector (parse_final): enough to compare two runs
without reading a record. SIG is sig_id(signature): 12 hex digits of its sha1.
Histograms give the median PCC to a tenth of a decade of (1 - PCC) and e2e percentiles to 9%.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgpack

from broker.keys import Keys
from sweeps import status

# Operations travel as one msgpack blob per script call (redis-py spends more packing many small
# arguments than Redis spends running the script). KEYS: records, final, agg, failed, attempts.
# Returns {finishes dropped because their vector was final already (late records), vectors 'F' booked}.
_WRITE = """
local ops = cmsgpack.unpack(ARGV[1])
local records, final, agg, failed, attempts = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local late, booked = 0, 0
for _, op in ipairs(ops) do
  if op[1] == 'u' then
    -- unfinal (retry): vector id, status, op, machine, executed, pcc bucket, e2e bucket, backend, sig id
    if redis.call('HDEL', final, op[2]) == 1 then
      local name, st = op[4], op[3]
      redis.call('HINCRBY', agg, 'done', -1)
      redis.call('HINCRBY', agg, 's|' .. st, -1)
      redis.call('HINCRBY', agg, 'os|' .. name .. '|' .. st, -1)
      redis.call('HINCRBY', agg, 'ms|' .. op[5] .. '|' .. st, -1)
      redis.call('HINCRBY', agg, 'om|' .. op[5] .. '|' .. name .. '|' .. st, -1)
      if op[6] == '1' then redis.call('HINCRBY', agg, 'b|' .. op[9], -1) end
      if op[10] ~= '' then
        redis.call('HINCRBY', agg, 'fb|' .. op[10] .. '|' .. st .. '|' .. name .. '|' .. op[5], -1)
      end
      if op[7] ~= '' then redis.call('HINCRBY', agg, 'ph|' .. name .. '|' .. op[7], -1) end
      if op[8] ~= '' then redis.call('HINCRBY', agg, 'eh|' .. name .. '|' .. op[8], -1) end
      redis.call('HDEL', failed, op[2])
    end
  elseif op[1] == 'r' then
    -- release a claimed attempt that never started: vector id, attempt, lease key, lease value, record field
    if redis.call('GET', op[4]) == op[5] then redis.call('DEL', op[4]) end
    if tonumber(redis.call('HGET', attempts, op[2]) or '0') == op[3] and redis.call('HEXISTS', records, op[6]) == 0 then
      if op[3] > 1 then redis.call('HSET', attempts, op[2], op[3] - 1) else redis.call('HDEL', attempts, op[2]) end
    end
  elseif op[1] == 'F' then
    -- finish many vectors that never ran, with one outcome (NOT_RUN, INVALID, CANCELED, EXPIRED, INFRA):
    --   status, op, machine, now, final summary, sig id, signature, {field, record, vector id, ...},
    --   lease key prefix: when not '', a vector someone holds the lease of is left to its holder
    local n, items, example, prefix = 0, op[9], nil, op[10]
    for i = 1, #items, 3 do
      local vid = items[i + 2]
      if redis.call('HEXISTS', final, vid) == 0 and (prefix == '' or redis.call('EXISTS', prefix .. vid) == 0)
          and redis.call('HSETNX', records, items[i], items[i + 1]) == 1 then
        redis.call('HSETNX', final, vid, op[6])  -- HSETNX: the worker's ACL allows no overwrite of a final
        n = n + 1
        example = example or vid
      end
    end
    booked = booked + n
    if n > 0 then
      local name, st, m = op[3], op[2], op[4]
      redis.call('HINCRBY', agg, 'done', n)
      redis.call('HSETNX', agg, 't_first', op[5])
      redis.call('HSET', agg, 't_last', op[5])
      redis.call('HINCRBY', agg, 's|' .. st, n)
      redis.call('HINCRBY', agg, 'os|' .. name .. '|' .. st, n)
      redis.call('HINCRBY', agg, 'ms|' .. m .. '|' .. st, n)
      redis.call('HINCRBY', agg, 'om|' .. m .. '|' .. name .. '|' .. st, n)
      if op[7] ~= '' then
        redis.call('HINCRBY', agg, 'fb|' .. op[7] .. '|' .. st .. '|' .. name .. '|' .. m, n)
        redis.call('HSETNX', agg, 'st|' .. op[7], op[8])
        redis.call('HSETNX', agg, 'sx|' .. op[7], example)
      end
    end
  else
    -- finish: field, record, vector id, status, final, op, machine, executed, pcc, pcc bucket,
    --         e2e bucket, failed, now, backend, lease key, final summary, sig id, signature,
    --         lease value, attempt
    if op[16] ~= '' and redis.call('GET', op[16]) == op[20] then redis.call('DEL', op[16]) end
    if redis.call('HEXISTS', final, op[4]) == 1 then
      late = late + 1  -- settled first (e.g. canceled while this attempt's lease had lapsed): no record under it
    elseif redis.call('HSETNX', records, op[2], op[3]) == 1 and op[6] == '1'
        and tonumber(redis.call('HGET', attempts, op[4]) or '0') <= op[21] then
      -- final unless a newer attempt started (this one's worker was taken for lost): that one decides
      local name, st = op[7], op[5]
      redis.call('HSETNX', final, op[4], op[17])
      redis.call('HINCRBY', agg, 'done', 1)
      redis.call('HSETNX', agg, 't_first', op[14])
      redis.call('HSET', agg, 't_last', op[14])
      redis.call('HINCRBY', agg, 's|' .. st, 1)
      redis.call('HINCRBY', agg, 'os|' .. name .. '|' .. st, 1)
      redis.call('HINCRBY', agg, 'ms|' .. op[8] .. '|' .. st, 1)
      redis.call('HINCRBY', agg, 'om|' .. op[8] .. '|' .. name .. '|' .. st, 1)
      if op[9] == '1' then redis.call('HINCRBY', agg, 'b|' .. op[15], 1) end
      if op[18] ~= '' then
        redis.call('HINCRBY', agg, 'fb|' .. op[18] .. '|' .. st .. '|' .. name .. '|' .. op[8], 1)
        redis.call('HSETNX', agg, 'st|' .. op[18], op[19])
        redis.call('HSETNX', agg, 'sx|' .. op[18], op[4])
      end
      if op[10] ~= '' then
        local key = 'pmin|' .. name
        local cur = redis.call('HGET', agg, key)
        if (not cur) or tonumber(op[10]) < tonumber(cur) then redis.call('HSET', agg, key, op[10]) end
        redis.call('HINCRBY', agg, 'ph|' .. name .. '|' .. op[11], 1)
      end
      if op[12] ~= '' then redis.call('HINCRBY', agg, 'eh|' .. name .. '|' .. op[12], 1) end
      if op[13] == '1' then redis.call('HSET', failed, op[4], op[3]) end
    end
  end
end
return {late, booked}
"""
PCC_BUCKET_MAX = 120
_SIGNATURE_SUBS = (
    (re.compile(r"0x[0-9a-fA-F]+"), "<addr>"),
    (re.compile(r"[\[(\{]\s*-?\d+(?:\s*,\s*-?\d+)+\s*[\])\}]"), "<shape>"),
    (re.compile(r"\b\d+(?:x\d+)+\b"), "<dims>"),  # 8x10 grids
    (re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w.])"), "<n>"),  # not the 300 of n300
    (re.compile(r"\s+"), " "),
)


@functools.lru_cache(maxsize=8192)
def signature(message: str) -> str:
    """An error message without its addresses, shapes and numbers: failures with one cause group."""
    text = message.split(" backtrace", 1)[0]
    for pattern, repl in _SIGNATURE_SUBS:
        text = pattern.sub(repl, text)
    return text.strip()[:300]


@functools.lru_cache(maxsize=8192)
def sig_id(signature_text: str) -> str:
    return hashlib.sha1(signature_text.encode()).hexdigest()[:12]


def bucket_of(record: dict[str, Any]) -> str:
    """The failure bucket (signature id) a final record counts in; "" for a PASS or no message."""
    text = record.get("signature") or ""
    return sig_id(text) if text and record["status"] != status.PASS else ""


def final_summary(record: dict[str, Any], sig: str) -> str:
    """The final hash's value for a vector: status, PCC, e2e ms and its bucket_of signature id."""
    pcc, e2e = record.get("pcc"), record.get("e2e_ms")
    return f"{record['status']}|{'' if pcc is None else repr(pcc)}|{'' if e2e is None else repr(e2e)}|{sig}"


def parse_final(value: bytes | str) -> tuple[str, float | None, float | None, str]:
    text = value.decode() if isinstance(value, bytes) else value
    state, pcc, e2e, sig = text.split("|")
    return state, float(pcc) if pcc else None, float(e2e) if e2e else None, sig


def pcc_bucket(pcc: float) -> int:
    gap = 1.0 - pcc
    if gap <= 0:
        return PCC_BUCKET_MAX
    return max(0, min(PCC_BUCKET_MAX, math.floor(-10.0 * math.log10(min(gap, 1.0)))))


def pcc_of_bucket(bucket: int) -> float:
    """The low edge of a PCC bucket (a conservative median)."""
    return 1.0 if bucket >= PCC_BUCKET_MAX else 1.0 - 10.0 ** (-bucket / 10.0)


def e2e_bucket(ms: float) -> int:
    return math.floor(8.0 * math.log2(max(ms * 1000.0, 1.0)))


def ms_of_bucket(bucket: int) -> float:
    """The geometric middle of an e2e bucket, in ms."""
    return 2.0 ** ((bucket + 0.5) / 8.0) / 1000.0


# Claim vectors right before they run, each atomically: a vector runs only under a lease its worker
# took here, so no copy of a chunk (redelivered, re-published) can start it twice, and nothing starts
# once the vector is final or its run canceled. KEYS: final, attempts, records. ARGV: lease value,
# lease ttl (s), lost attempts that end a vector, record field separator, the run's hash and vectors
# (only read, so not KEYS, which a worker's ACL user must be able to write), then (vector id, lease
# key) pairs. Returns per vector {code, attempt, lost, payload}:
#   R run it as `attempt` (lost = 1: the attempt before died with its worker: no record, no lease)
#   F final already | L another worker holds it | M not in the run
#   X the run is canceled (payload: for booking it CANCELED) | D its attempt `attempt` was lost and
#   it has been lost `max_lost` times: book that attempt INFRA, final (payload given)
# A lease that holds this very value is this claim resent after a lost reply: the same answer again.
_CLAIM = """
local final, attempts, records = KEYS[1], KEYS[2], KEYS[3]
local value, ttl, max_lost, sep, run, vectors = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
local canceled = redis.call('HGET', run, 'state') == 'canceled'
local out = {}
for i = 7, #ARGV, 2 do
  local vid, lease = ARGV[i], ARGV[i + 1]
  local tried = tonumber(redis.call('HGET', attempts, vid) or '0')
  local payload = redis.call('HGET', vectors, vid)
  local holder = redis.call('GET', lease)
  if redis.call('HEXISTS', final, vid) == 1 then
    out[#out + 1] = {'F', tried, 0}
  elseif not payload then
    out[#out + 1] = {'M', tried, 0}
  elseif holder == value then
    local lost = (tried > 1 and redis.call('HEXISTS', records, vid .. sep .. (tried - 1)) == 0) and 1 or 0
    out[#out + 1] = {'R', tried, lost, payload}
  elseif holder then
    out[#out + 1] = {'L', tried, 0}
  elseif canceled then
    out[#out + 1] = {'X', tried, 0, payload}
  else
    local lost = (tried > 0 and redis.call('HEXISTS', records, vid .. sep .. tried) == 0) and 1 or 0
    if lost == 1 and tried >= max_lost then
      out[#out + 1] = {'D', tried, 1, payload}
    else
      redis.call('HSET', attempts, vid, tried + 1)
      redis.call('SET', lease, value, 'EX', ttl)
      out[#out + 1] = {'R', tried + 1, lost, payload}
    end
  end
end
return out
"""

# Renew leases this worker still holds (a lease whose value changed was taken over: not renewed).
# KEYS: lease keys; ARGV: ttl, then one value per key. Returns the indexes (1-based) of the lost ones.
_RENEW = """
local lost = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then redis.call('EXPIRE', key, ARGV[1]) else lost[#lost + 1] = i end
end
return lost
"""

RUN, FINAL, LEASED, MISSING, CANCELED, DEAD = "R", "F", "L", "M", "X", "D"


@dataclass
class Claim:
    """What a claim step decided for one vector (see _CLAIM for the actions)."""

    vector_id: str
    action: str
    attempt: int  # RUN: the attempt this claim started; DEAD: the attempt that was lost the last time
    lost: bool  # RUN: the attempt before this one died with its worker (no record, no lease)
    payload: bytes | None
    lease: str  # the lease value this claim holds (RUN)


class Results:
    """Reads and writes one run's attempts, for a worker (or the coordinator, for vectors that never run).
    `worker` names the lease holder: a worker passes its name and incarnation, unique per process."""

    def __init__(self, redis: Any, keys: Keys, worker: str = "") -> None:
        self.redis = redis
        self.keys = keys
        self.worker = worker
        self._write = redis.register_script(_WRITE)
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)

    def claim(self, run_id: str, ids: list[str], ttl: int = 30, max_lost: int = 2) -> list[Claim]:
        """Claim vectors right before they run, in one atomic step (see _CLAIM). Each call holds its
        leases under a fresh value, so only a resend of this very call can find them its own."""
        value = f"{self.worker}/{uuid.uuid4().hex[:12]}"
        return self.claim_as(value, run_id, ids, ttl, max_lost)

    def claim_as(self, value: str, run_id: str, ids: list[str], ttl: int, max_lost: int) -> list[Claim]:
        """claim() under a given lease value: the resend of a call whose reply was lost."""
        k = self.keys
        args: list[Any] = [value, ttl, max_lost, Keys.FIELD_SEP, k.run(run_id), k.vectors(run_id)]
        lease = k.lease
        for vid in ids:
            args += (vid, lease(run_id, vid))
        replies = self._claim(keys=[k.final(run_id), k.attempts(run_id), k.records(run_id)], args=args)
        return [
            Claim(vid, r[0].decode(), r[1], bool(r[2]), r[3] if len(r) > 3 else None, value)
            for vid, r in zip(ids, replies, strict=True)
        ]

    def renew(self, leases: list[tuple[str, str]], ttl: int) -> list[str]:
        """Renew (lease key, value) pairs still held; returns the keys another worker took over."""
        if not leases:
            return []
        lost = self._renew(keys=[k for k, _ in leases], args=[ttl, *(v for _, v in leases)])
        return [leases[i - 1][0] for i in lost]

    def unfinal_op(self, record: dict[str, Any]) -> list[Any]:
        """Take a vector's final record out of the aggregates (the record itself stays), for a retry.
        The lowest PCC is kept: it was seen, and a minimum cannot be taken back."""
        f = self.finish_op(record)
        return ["u", record["vector"], record["status"], record["op"], record["machine"], f[8], f[10], f[11], f[14],
                f[17]]  # fmt: skip

    def release_op(self, run_id: str, vector_id: str, attempt: int, lease: str) -> list[Any]:
        """Undo a claim whose attempt never started (its worker gave the chunk back): the lease goes,
        and the attempt number too unless a newer one started meanwhile."""
        field = Keys.record_field(vector_id, attempt)
        return ["r", vector_id, attempt, self.keys.lease(run_id, vector_id), lease, field]

    def finish_op(self, record: dict[str, Any], final: bool = True, lease: str = "") -> list[Any]:
        """The attempt's record, written once, final unless `final` is False or a newer attempt of the
        vector started; dropped if the vector is final already. `lease`: the value the attempt held
        (its lease is freed if still held under it)."""
        pcc = record.get("pcc")
        e2e = record.get("e2e_ms")
        executed = status.is_executed(record["status"])
        measured = executed and pcc is not None
        lease_key = self.keys.lease(record["run"], record["vector"]) if lease else ""
        sig = bucket_of(record)
        return [
            "f",
            Keys.record_field(record["vector"], record["attempt"]),
            msgpack.packb(record, use_bin_type=True),
            record["vector"],
            record["status"],
            "1" if final else "0",
            record["op"],
            record["machine"],
            "1" if executed else "0",
            repr(pcc) if measured else "",
            str(pcc_bucket(pcc)) if measured else "",
            str(e2e_bucket(e2e)) if executed and e2e is not None else "",
            "1" if record["status"] in status.LISTED else "0",
            repr(time.time()),
            record["backend"],
            lease_key,
            final_summary(record, sig),
            sig,
            record["signature"] if sig else "",
            lease,
            record["attempt"],
        ]

    def finish_unrun_op(
        self, template: dict[str, Any], vectors: list[tuple[str, str | None, str]], idle_only: bool = False
    ) -> list[Any]:
        """Finish many vectors that never ran, with one status and signature (the coordinator's
        NOT_RUN or INVALID of one op and machine): `template` is the record of any of them,
        `vectors` their (id, config_hash, message). Each gets its record; the aggregates move
        once, by the count of new finals. A vector final already is left alone; with `idle_only`,
        so is one whose lease someone holds (it is running: its holder books it)."""
        if status.is_executed(template["status"]) or template["attempt"]:
            raise ValueError("finish_unrun_op is for attempt-0 records of vectors that never ran")
        sig = bucket_of(template)
        items: list[Any] = []
        packer = msgpack.Packer(use_bin_type=True)
        pack = packer.pack
        # a msgpack map is its header and its packed pairs, in order: the pairs every record shares are
        # packed once into the segments around the three that vary (vector, config_hash, message)
        varying = ("vector", "config_hash", "message")
        segments, order, current = [], [], packer.pack_map_header(len(template))
        for key, value in template.items():
            current += pack(key)
            if key in varying:
                segments.append(current)
                order.append(varying.index(key))
                current = b""
            else:
                current += pack(value)
        s0, s1, s2 = segments
        a, b, c = order
        for own in vectors:  # (vector id, config_hash, message)
            record = b"".join((s0, pack(own[a]), s1, pack(own[b]), s2, pack(own[c]), current))
            items += (Keys.record_field(own[0], 0), record, own[0])
        summary = final_summary(template, sig)
        prefix = self.keys.lease_prefix(template["run"]) if idle_only else ""
        return ["F", template["status"], template["op"], template["machine"], repr(time.time()), summary, sig,
                template["signature"] if sig else "", items, prefix]  # fmt: skip

    def unrun_ops(
        self, run_id: str, vectors: list[tuple[str, bytes | None]], outcome: dict[str, Any], machine: str, **where: Any
    ) -> list[list[Any]]:
        """Bulk ops giving `outcome` (CANCELED, EXPIRED, INFRA...) to vectors (id, payload) that are
        neither final nor held by a worker; grouped by op and machine, as the aggregates count them.
        A payload this sweepctl cannot read still gets its record (op "unknown", `machine`)."""
        now = time.time()
        groups: dict[tuple[str, str], list[tuple[str, str | None, str]]] = {}
        for vid, payload in vectors:
            op, on, config_hash = vector_fields(payload, machine)
            groups.setdefault((op, on), []).append((vid, config_hash, outcome.get("message") or ""))
        ops = []
        for (op, on), items in groups.items():
            fields = {"id": items[0][0], "op": op, "machine": on, "config_hash": items[0][1]}
            template = make_record(fields, run_id, 0, outcome, start=now, end=now, **where)
            for start in range(0, len(items), 1000):
                ops.append(self.finish_unrun_op(template, items[start : start + 1000], idle_only=True))
        return ops

    def write(self, run_id: str, ops: list[list[Any]], pipe: Any = None) -> Any:
        """Apply ops of one run in order, in one script call; returns [finishes that came late (their
        vector was final already), vectors the bulk ops booked] (or the pipeline, given one)."""
        keys = self.keys
        names = [keys.records(run_id), keys.final(run_id), keys.agg(run_id), keys.failed(run_id), keys.attempts(run_id)]
        blob = msgpack.packb(ops, use_bin_type=False)  # Redis's cmsgpack does not read the bin type
        return self._write(keys=names, args=[blob], client=pipe)

    def finish(self, record: dict[str, Any], final: bool = True, lease: str = "") -> bool:
        """Write one attempt's record once; aggregates move only on a vector's first final record.
        False when it came late (the vector was final already)."""
        return not self.write(record["run"], [self.finish_op(record, final, lease)])[0]


def make_record(
    vector: dict[str, Any], run_id: str, attempt: int, outcome: dict[str, Any], **where: Any
) -> dict[str, Any]:
    """The one record shape (DESIGN.md §3 Result): outcome fields plus who ran it where.
    `device_perf` (tt-metal's device profiler figures, workers/deviceperf.py) is there only when the
    profiler measured the op: absent, never zeros."""
    message = outcome.get("message") or ""
    record = {
        "run": run_id,
        "vector": vector["id"],
        "attempt": attempt,
        "op": vector["op"],
        "machine": vector["machine"],
        "config_hash": vector.get("config_hash"),
        "status": outcome["status"],
        "pcc": outcome.get("pcc"),
        "threshold": outcome.get("threshold"),
        "threshold_dtype": outcome.get("threshold_dtype"),  # which tensor's dtype set the threshold
        "message": message,
        "signature": signature(message) if message else "",
        "e2e_ms": outcome.get("e2e_ms"),
        "backend": where.get("backend", ""),
        "worker": where.get("worker", ""),
        "host": where.get("host", ""),
        "devices": where.get("devices", []),
        "ttnn_version": where.get("ttnn_version", ""),
        "start": where.get("start"),
        "end": where.get("end"),
    }
    if outcome.get("device_perf"):
        record["device_perf"] = outcome["device_perf"]
    return record


def vector_fields(payload: bytes | None, machine: str) -> tuple[str, str, str | None]:
    """(op, machine, config_hash) of a stored vector, read leniently: a record must name something
    even for a payload no worker can run (a newer schema, corrupt bytes)."""
    try:
        vector = msgpack.unpackb(payload or b"", raw=False)
    except Exception:  # msgpack raises several unrelated types for bad bytes
        vector = None
    if not isinstance(vector, dict):
        return "unknown", machine, None
    op, on, config_hash = vector.get("op"), vector.get("machine"), vector.get("config_hash")
    return (
        op if isinstance(op, str) else "unknown",
        on if isinstance(on, str) else machine,
        config_hash if isinstance(config_hash, str) else None,
    )


def decode_record(payload: bytes) -> dict[str, Any]:
    return msgpack.unpackb(payload, raw=False)
