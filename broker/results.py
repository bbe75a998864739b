"""Attempts and records: one record per attempt, written once, with the run's aggregates updated
in the same atomic step (a Lua script), so a report never scans results.

`claim` starts attempts right before they run, atomically per vector: it refuses a vector that is
final, held by another worker's lease, or whose run is canceled, and otherwise bumps the attempt
counter and takes a lease (a TTL the heartbeat renews). So a vector starts at most once per
attempt number, whatever copies of its chunk are around. `finish` writes the attempt's record
with HSETNX and, the first time a vector reaches a final status, bumps the counters; a record for a
vector that is final already is dropped (a record never contradicts its vector's final status).
All steps are idempotent, so a writer may resend them after a lost connection.
The run's aggregates (`{p}:run:R:agg`) are named by broker.keys.Agg.
The final hash holds `STATUS|pcc|e2e_ms|SIG` per vector (parse_final): enough to compare two runs
without reading a record. SIG is sig_id(signature): 12 hex digits of its sha1.
Histograms give the median PCC to a tenth of a decade of (1 - PCC) and e2e percentiles to 9%.
"""

from __future__ import annotations

import functools
import hashlib
import math
import operator
import re
import time
import uuid
from dataclasses import dataclass
from string import Template
from typing import Any

import msgpack

from broker.keys import Agg, Keys
from sweeps import status


@dataclass(frozen=True)
class LuaArgs:
    """A Lua step's positional arguments, declared once by name: Python builds them with keywords
    (`pack`), the script names them with one `unpack` line (`lua`), so the two sides cannot drift.
    With a `name`, they are one operation of the write script, its name first."""

    fields: tuple[str, ...]
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_take", operator.itemgetter(*self.fields))  # the hot path's one C call

    def pack(self, **values: Any) -> list[Any]:
        try:
            packed = self._take(values) if len(values) == len(self.fields) else None
        except KeyError:
            packed = None
        if packed is None:
            raise TypeError(f"{self.name or 'a Lua step'} takes {', '.join(self.fields)}; got {', '.join(values)}")
        return [self.name, *packed] if self.name else list(packed)

    def named(self, packed: list[Any]) -> dict[str, Any]:
        """pack's keywords back from its list."""
        return dict(zip(self.fields, packed[self.first - 1 :], strict=True))

    @property
    def first(self) -> int:
        """The 1-based Lua index of the first field (after the name of an operation)."""
        return 2 if self.name else 1

    def lua(self, table: str) -> str:
        last = self.first + len(self.fields) - 1
        return f"local {', '.join(self.fields)} = unpack({table}, {self.first}, {last})"


# The write script's operations (what each does: the script below). FINISH's `settles` is "1" unless the
# record must not make its vector final.
FINISH = LuaArgs(
    ("field", "record", "vector", "status", "settles", "op", "machine", "executed", "pcc", "pcc_bucket", "e2e_bucket",
     "listed", "now", "backend", "lease_key", "summary", "sig", "signature", "lease", "attempt"),
    "finish",
)  # fmt: skip
FINISH_UNRUN = LuaArgs(
    ("status", "op", "machine", "now", "summary", "sig", "signature", "items", "lease_prefix"), "finish_unrun"
)
UNFINAL = LuaArgs(
    ("vector", "status", "op", "machine", "executed", "pcc_bucket", "e2e_bucket", "backend", "sig"), "unfinal"
)
RELEASE = LuaArgs(("vector", "attempt", "lease_key", "lease", "field"), "release")
_WRITE_OPS = {"FINISH": FINISH, "FINISH_UNRUN": FINISH_UNRUN, "UNFINAL": UNFINAL, "RELEASE": RELEASE}

# Operations travel as one msgpack blob per script call (redis-py spends more packing many small
# arguments than Redis spends running the script). KEYS: records, final, agg, failed, attempts.
# Aggregate field names come from broker.keys.Agg, each operation's fields from its LuaArgs ($NAME below).
# Returns {finishes dropped because their vector was final already (late records), vectors FINISH_UNRUN booked}.
_WRITE = Template("""
local ops = cmsgpack.unpack(ARGV[1])
local records, final, agg, failed, attempts = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local late, booked = 0, 0
for _, entry in ipairs(ops) do
  local kind = entry[1]
  if kind == '$UNFINAL' then
    -- take a final vector out of the aggregates, for a retry
    $UNFINAL_ARGS
    if redis.call('HDEL', final, vector) == 1 then
      redis.call('HINCRBY', agg, '$DONE', -1)
      redis.call('HINCRBY', agg, '$STATUS' .. status, -1)
      redis.call('HINCRBY', agg, '$OP_STATUS' .. op .. '$SEP' .. status, -1)
      redis.call('HINCRBY', agg, '$MACHINE_STATUS' .. machine .. '$SEP' .. status, -1)
      redis.call('HINCRBY', agg, '$MACHINE_OP_STATUS' .. machine .. '$SEP' .. op .. '$SEP' .. status, -1)
      if executed == '1' then redis.call('HINCRBY', agg, '$BACKEND' .. backend, -1) end
      if sig ~= '' then
        redis.call('HINCRBY', agg, '$BUCKET' .. sig .. '$SEP' .. status .. '$SEP' .. op .. '$SEP' .. machine, -1)
      end
      if pcc_bucket ~= '' then redis.call('HINCRBY', agg, '$PCC_HIST' .. op .. '$SEP' .. pcc_bucket, -1) end
      if e2e_bucket ~= '' then redis.call('HINCRBY', agg, '$E2E_HIST' .. op .. '$SEP' .. e2e_bucket, -1) end
      redis.call('HDEL', failed, vector)
    end
  elseif kind == '$RELEASE' then
    -- release a claimed attempt that never started
    $RELEASE_ARGS
    if redis.call('GET', lease_key) == lease then redis.call('DEL', lease_key) end
    if tonumber(redis.call('HGET', attempts, vector) or '0') == attempt
        and redis.call('HEXISTS', records, field) == 0 then
      if attempt > 1 then
        redis.call('HSET', attempts, vector, attempt - 1)
      else
        redis.call('HDEL', attempts, vector)
      end
    end
  elseif kind == '$FINISH_UNRUN' then
    -- finish many vectors that never ran, with one outcome (NOT_RUN, INVALID, CANCELED, EXPIRED, INFRA):
    --   items {field, record, vector id, ...}; lease_prefix: when not '', a vector someone holds the
    --   lease of is left to its holder
    $FINISH_UNRUN_ARGS
    local n, example = 0, nil
    for i = 1, #items, 3 do
      local vid = items[i + 2]
      if redis.call('HEXISTS', final, vid) == 0
          and (lease_prefix == '' or redis.call('EXISTS', lease_prefix .. vid) == 0)
          and redis.call('HSETNX', records, items[i], items[i + 1]) == 1 then
        redis.call('HSETNX', final, vid, summary)  -- HSETNX: the worker's ACL allows no overwrite of a final
        n = n + 1
        example = example or vid
      end
    end
    booked = booked + n
    if n > 0 then
      redis.call('HINCRBY', agg, '$DONE', n)
      redis.call('HSETNX', agg, '$T_FIRST', now)
      redis.call('HSET', agg, '$T_LAST', now)
      redis.call('HINCRBY', agg, '$STATUS' .. status, n)
      redis.call('HINCRBY', agg, '$OP_STATUS' .. op .. '$SEP' .. status, n)
      redis.call('HINCRBY', agg, '$MACHINE_STATUS' .. machine .. '$SEP' .. status, n)
      redis.call('HINCRBY', agg, '$MACHINE_OP_STATUS' .. machine .. '$SEP' .. op .. '$SEP' .. status, n)
      if sig ~= '' then
        redis.call('HINCRBY', agg, '$BUCKET' .. sig .. '$SEP' .. status .. '$SEP' .. op .. '$SEP' .. machine, n)
        redis.call('HSETNX', agg, '$BUCKET_TEXT' .. sig, signature)
        redis.call('HSETNX', agg, '$BUCKET_EXAMPLE' .. sig, example)
      end
    end
  else  -- '$FINISH'
    -- one attempt's record, written once; its vector's first final record moves the aggregates
    $FINISH_ARGS
    if lease_key ~= '' and redis.call('GET', lease_key) == lease then redis.call('DEL', lease_key) end
    if redis.call('HEXISTS', final, vector) == 1 then
      late = late + 1  -- settled first (e.g. canceled while this attempt's lease had lapsed): no record under it
    elseif redis.call('HSETNX', records, field, record) == 1 and settles == '1'
        and tonumber(redis.call('HGET', attempts, vector) or '0') <= attempt then
      -- final unless a newer attempt started (this one's worker was taken for lost): that one decides
      redis.call('HSETNX', final, vector, summary)
      redis.call('HINCRBY', agg, '$DONE', 1)
      redis.call('HSETNX', agg, '$T_FIRST', now)
      redis.call('HSET', agg, '$T_LAST', now)
      redis.call('HINCRBY', agg, '$STATUS' .. status, 1)
      redis.call('HINCRBY', agg, '$OP_STATUS' .. op .. '$SEP' .. status, 1)
      redis.call('HINCRBY', agg, '$MACHINE_STATUS' .. machine .. '$SEP' .. status, 1)
      redis.call('HINCRBY', agg, '$MACHINE_OP_STATUS' .. machine .. '$SEP' .. op .. '$SEP' .. status, 1)
      if executed == '1' then redis.call('HINCRBY', agg, '$BACKEND' .. backend, 1) end
      if sig ~= '' then
        redis.call('HINCRBY', agg, '$BUCKET' .. sig .. '$SEP' .. status .. '$SEP' .. op .. '$SEP' .. machine, 1)
        redis.call('HSETNX', agg, '$BUCKET_TEXT' .. sig, signature)
        redis.call('HSETNX', agg, '$BUCKET_EXAMPLE' .. sig, vector)
      end
      if pcc ~= '' then
        local key = '$PCC_MIN' .. op
        local cur = redis.call('HGET', agg, key)
        if (not cur) or tonumber(pcc) < tonumber(cur) then redis.call('HSET', agg, key, pcc) end
        redis.call('HINCRBY', agg, '$PCC_HIST' .. op .. '$SEP' .. pcc_bucket, 1)
      end
      if e2e_bucket ~= '' then redis.call('HINCRBY', agg, '$E2E_HIST' .. op .. '$SEP' .. e2e_bucket, 1) end
      if listed == '1' then redis.call('HSET', failed, vector, record) end
    end
  end
end
return {late, booked}
""").substitute(
    SEP=Agg.SEP, DONE=Agg.DONE, T_FIRST=Agg.T_FIRST, T_LAST=Agg.T_LAST,
    **{kind: Agg.prefix(getattr(Agg, kind)) for kind in (
        "STATUS", "OP_STATUS", "MACHINE_STATUS", "MACHINE_OP_STATUS", "BUCKET", "BUCKET_TEXT", "BUCKET_EXAMPLE",
        "PCC_MIN", "PCC_HIST", "E2E_HIST", "BACKEND")},
    **{name: op.name for name, op in _WRITE_OPS.items()},
    **{f"{name}_ARGS": op.lua("entry") for name, op in _WRITE_OPS.items()},
)  # fmt: skip
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
# once the vector is final or its run canceled. KEYS: final, attempts, records. ARGV: CLAIM (lease
# value, lease ttl (s), lost attempts that end a vector, record field separator, the run's hash and
# vectors: only read, so not KEYS, which a worker's ACL user must be able to write), then (vector id,
# lease key) pairs. Returns per vector {code, attempt, lost, payload}:
#   R run it as `attempt` (lost = 1: the attempt before died with its worker: no record, no lease)
#   F final already | L another worker holds it | M not in the run
#   X the run is canceled (payload: for booking it CANCELED) | D its attempt `attempt` was lost and
#   it has been lost `max_lost` times: book that attempt INFRA, final (payload given)
# A lease that holds this very value is this claim resent after a lost reply: the same answer again.
CLAIM = LuaArgs(("value", "ttl", "max_lost", "sep", "run", "vectors"))
_CLAIM = Template("""
local final, attempts, records = KEYS[1], KEYS[2], KEYS[3]
$CLAIM_ARGS
max_lost = tonumber(max_lost)
local canceled = redis.call('HGET', run, 'state') == 'canceled'
local out = {}
for i = $PAIRS, #ARGV, 2 do
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
""").substitute(CLAIM_ARGS=CLAIM.lua("ARGV"), PAIRS=len(CLAIM.fields) + 1)

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
        args = CLAIM.pack(
            value=value, ttl=ttl, max_lost=max_lost, sep=Keys.FIELD_SEP, run=k.run(run_id), vectors=k.vectors(run_id)
        )
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
        f = FINISH.named(self.finish_op(record))
        return UNFINAL.pack(**{field: f[field] for field in UNFINAL.fields})

    def release_op(self, run_id: str, vector_id: str, attempt: int, lease: str) -> list[Any]:
        """Undo a claim whose attempt never started (its worker gave the chunk back): the lease goes,
        and the attempt number too unless a newer one started meanwhile."""
        return RELEASE.pack(
            vector=vector_id, attempt=attempt, lease_key=self.keys.lease(run_id, vector_id), lease=lease,
            field=Keys.record_field(vector_id, attempt),
        )  # fmt: skip

    def finish_op(self, record: dict[str, Any], final: bool = True, lease: str = "") -> list[Any]:
        """The attempt's record, written once, final unless `final` is False or a newer attempt of the
        vector started; dropped if the vector is final already. `lease`: the value the attempt held
        (its lease is freed if still held under it)."""
        pcc = record.get("pcc")
        e2e = record.get("e2e_ms")
        executed = status.is_executed(record["status"])
        measured = executed and pcc is not None
        sig = bucket_of(record)
        return FINISH.pack(
            field=Keys.record_field(record["vector"], record["attempt"]),
            record=msgpack.packb(record, use_bin_type=True),
            vector=record["vector"],
            status=record["status"],
            settles="1" if final else "0",
            op=record["op"],
            machine=record["machine"],
            listed="1" if record["status"] in status.LISTED else "0",
            now=repr(time.time()),
            backend=record["backend"],
            lease_key=self.keys.lease(record["run"], record["vector"]) if lease else "",
            summary=final_summary(record, sig),
            signature=record["signature"] if sig else "",
            lease=lease,
            attempt=record["attempt"],
            executed="1" if executed else "0",
            pcc=repr(pcc) if measured else "",
            pcc_bucket=str(pcc_bucket(pcc)) if measured else "",
            e2e_bucket=str(e2e_bucket(e2e)) if executed and e2e is not None else "",
            sig=sig,
        )

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
        return FINISH_UNRUN.pack(
            status=template["status"], op=template["op"], machine=template["machine"], now=repr(time.time()),
            summary=summary, sig=sig, signature=template["signature"] if sig else "", items=items, lease_prefix=prefix,
        )  # fmt: skip

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
