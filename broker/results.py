"""Attempts and records: one record per attempt, written once, with the run's aggregates updated
in the same atomic step (a Lua script), so a report never scans results.

`claim` starts attempts right before they run, atomically per vector: it refuses a vector that is
final, held by another worker's lease, or whose run is canceled, and otherwise bumps the attempt
counter and takes a lease (a TTL the heartbeat renews). So a vector starts at most once per
attempt number, whatever copies of its chunk are around. `finish` writes the attempt's record
with HSETNX and, the first time a vector reaches a final status, bumps the counters; a record for a
vector that is final already is dropped (a record never contradicts its vector's final status), and
its vector's attempt counter is raised to it when lower (the claim was lost: a Redis that restarted
without its last second of writes, then given the record again by its worker).
All steps are idempotent, so a writer may resend them after a lost connection or a Redis restart.
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

# Lua helpers every script below starts with: `fetch` reads many hash fields (HMGET) or keys (MGET: no
# key) with one command per key, into a table name -> value (false when absent); `send` runs a command
# over a long argument list (HSET pairs, HDEL fields, DEL keys). Both go in slices Lua's unpack can take.
_LUA_BATCH = """
local function fetch(cmd, key, names, into)
  for i = 1, #names, 1000 do
    local last = math.min(i + 999, #names)
    local got = key and redis.call(cmd, key, unpack(names, i, last)) or redis.call(cmd, unpack(names, i, last))
    for j = i, last do into[names[j]] = got[j - i + 1] end
  end
  return into
end
local function send(cmd, key, args)
  for i = 1, #args, 1000 do
    local last = math.min(i + 999, #args)
    if key then redis.call(cmd, key, unpack(args, i, last)) else redis.call(cmd, unpack(args, i, last)) end
  end
end
"""

# Operations travel as one msgpack blob per script call (redis-py spends more packing many small
# arguments than Redis spends running the script). KEYS: records, final, agg, failed, attempts.
# Aggregate field names come from broker.keys.Agg, each operation's fields from its LuaArgs ($NAME below).
# Returns {finishes dropped because their vector was final already (late records), vectors FINISH_UNRUN booked}.
#
# Redis's CPU per vector bounds the devices one Redis carries, so the script runs a few commands per
# call and per vector rather than one per field per vector, in four steps:
#   1. read every final, attempt count, record and lease the ops look at: one HMGET/MGET per key;
#   2. decide: the ops in order against those values, each seeing what the ones before it wrote (a
#      table per key stands for it), staging the writes; the agg hash's counters add up per field,
#      its other fields keep what their HSETNX/HSET/lowest-PCC rule picks;
#   3. the agg hash's new values, from the ones there (one HMGET): what the per-vector HINCRBYs,
#      HSETNXs and HSETs would have left, the same strings;
#   4. write: one HSETNX per record and per final (a worker's ACL allows no other write there), one
#      command each for failed, attempts and leases, the agg hash in one HSET.
# A script that fails midway keeps the writes it made (Redis does not roll a script back): records
# without their counts, which no resend repairs. So nothing is written until everything that can fail
# has been tried: every key written was read first (a key of the wrong type fails there), every counter
# parsed (a non-integer fails as HINCRBY would), every write checked against the caller's ACL
# (redis.acl_check_cmd), and Redis refuses a write for lack of memory only to a script that has not
# written yet. An error leaves nothing written; a resend once its cause is fixed counts everything.
_WRITE = Template(_LUA_BATCH + """
local ops = cmsgpack.unpack(ARGV[1])
local records, final, agg, failed, attempts = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local late, booked = 0, 0

-- 1. read
local want_final, want_tries, want_records, want_leases = {}, {}, {}, {}
for _, entry in ipairs(ops) do
  local kind = entry[1]
  if kind == '$UNFINAL' then
    $UNFINAL_ARGS
    want_final[#want_final + 1] = vector
  elseif kind == '$RELEASE' then
    $RELEASE_ARGS
    want_tries[#want_tries + 1] = vector
    want_records[#want_records + 1] = field
    want_leases[#want_leases + 1] = lease_key
  elseif kind == '$FINISH_UNRUN' then
    $FINISH_UNRUN_ARGS
    for i = 1, #items, 3 do
      want_records[#want_records + 1] = items[i]
      want_final[#want_final + 1] = items[i + 2]
      if lease_prefix ~= '' then want_leases[#want_leases + 1] = lease_prefix .. items[i + 2] end
    end
  else
    $FINISH_ARGS
    want_final[#want_final + 1] = vector
    want_tries[#want_tries + 1] = vector
    want_records[#want_records + 1] = field
    if lease_key ~= '' then want_leases[#want_leases + 1] = lease_key end
  end
end
local finals = fetch('HMGET', final, want_final, {})
local tries = fetch('HMGET', attempts, want_tries, {})
local recorded = fetch('HMGET', records, want_records, {})
local leases = fetch('MGET', nil, want_leases, {})

-- 2. decide
local new_records, final_log, freed = {}, {}, {}  -- final_log: field, summary (HSETNX) or false (HDEL)
local failed_new, failed_order, tries_new, tries_order = {}, {}, {}, {}
local function stage(new, order, field, value)  -- a hash field's last value, false: deleted
  if new[field] == nil then order[#order + 1] = field end
  new[field] = value
end
local function free(lease_key, lease)  -- the lease goes if it still holds this value
  if leases[lease_key] == lease then
    leases[lease_key] = false
    freed[#freed + 1] = lease_key
  end
end
-- the agg hash: what the old per-vector commands would do, per field (each field is of one kind)
local counted, delta = {}, {}  -- HINCRBY: fields in the order first counted, the sum of their increments
local function count(name, n)
  local sum = delta[name]
  if not sum then counted[#counted + 1] = name end
  delta[name] = (sum or 0) + n
end
local firsts, first_value = {}, {}  -- HSETNX: the first value given
local function first(name, v)
  if not first_value[name] then
    firsts[#firsts + 1] = name
    first_value[name] = v
  end
end
local t_last = nil  -- HSET: the last value given
local lowered, pccs = {}, {}  -- HSET when below the value there: the values given, in order
local function lowest(name, v)
  local seen = pccs[name]
  if not seen then
    seen = {}
    pccs[name] = seen
    lowered[#lowered + 1] = name
  end
  seen[#seen + 1] = v
end
local function counts(n, status, op, machine, sig)  -- what every final vector counts in
  count('$DONE', n)
  count('$STATUS' .. status, n)
  count('$OP_STATUS' .. op .. '$SEP' .. status, n)
  count('$MACHINE_STATUS' .. machine .. '$SEP' .. status, n)
  count('$MACHINE_OP_STATUS' .. machine .. '$SEP' .. op .. '$SEP' .. status, n)
  if sig ~= '' then count('$BUCKET' .. sig .. '$SEP' .. status .. '$SEP' .. op .. '$SEP' .. machine, n) end
end
for _, entry in ipairs(ops) do
  local kind = entry[1]
  if kind == '$UNFINAL' then
    -- take a final vector out of the aggregates, for a retry
    $UNFINAL_ARGS
    if finals[vector] then
      finals[vector] = false
      final_log[#final_log + 1] = vector
      final_log[#final_log + 1] = false
      counts(-1, status, op, machine, sig)
      if executed == '1' then count('$BACKEND' .. backend, -1) end
      if pcc_bucket ~= '' then count('$PCC_HIST' .. op .. '$SEP' .. pcc_bucket, -1) end
      if e2e_bucket ~= '' then count('$E2E_HIST' .. op .. '$SEP' .. e2e_bucket, -1) end
      stage(failed_new, failed_order, vector, false)
    end
  elseif kind == '$RELEASE' then
    -- release a claimed attempt that never started
    $RELEASE_ARGS
    free(lease_key, lease)
    if tonumber(tries[vector] or '0') == attempt and not recorded[field] then
      tries[vector] = attempt > 1 and attempt - 1 or false
      stage(tries_new, tries_order, vector, tries[vector])
    end
  elseif kind == '$FINISH_UNRUN' then
    -- finish many vectors that never ran, with one outcome (NOT_RUN, INVALID, CANCELED, EXPIRED, INFRA):
    --   items {field, record, vector id, ...}; lease_prefix: when not '', a vector someone holds the
    --   lease of is left to its holder
    $FINISH_UNRUN_ARGS
    local n, example = 0, nil
    for i = 1, #items, 3 do
      local vid = items[i + 2]
      if not finals[vid] and (lease_prefix == '' or not leases[lease_prefix .. vid]) and not recorded[items[i]] then
        recorded[items[i]] = true
        new_records[#new_records + 1] = items[i]
        new_records[#new_records + 1] = items[i + 1]
        finals[vid] = summary
        final_log[#final_log + 1] = vid
        final_log[#final_log + 1] = summary
        n = n + 1
        example = example or vid
      end
    end
    booked = booked + n
    if n > 0 then
      counts(n, status, op, machine, sig)
      first('$T_FIRST', now)
      t_last = now
      if sig ~= '' then
        first('$BUCKET_TEXT' .. sig, signature)
        first('$BUCKET_EXAMPLE' .. sig, example)
      end
    end
  else  -- '$FINISH'
    -- one attempt's record, written once; its vector's first final record moves the aggregates
    $FINISH_ARGS
    if lease_key ~= '' then free(lease_key, lease) end
    if finals[vector] then
      late = late + 1  -- settled first (e.g. canceled while this attempt's lease had lapsed): no record under it
    elseif not recorded[field] then
      recorded[field] = true
      new_records[#new_records + 1] = field
      new_records[#new_records + 1] = record
      -- final unless a newer attempt started (this one's worker was taken for lost): that one decides
      if settles == '1' and tonumber(tries[vector] or '0') <= attempt then
        finals[vector] = summary
        final_log[#final_log + 1] = vector
        final_log[#final_log + 1] = summary
        counts(1, status, op, machine, sig)
        first('$T_FIRST', now)
        t_last = now
        if executed == '1' then count('$BACKEND' .. backend, 1) end
        if sig ~= '' then
          first('$BUCKET_TEXT' .. sig, signature)
          first('$BUCKET_EXAMPLE' .. sig, vector)
        end
        if pcc ~= '' then
          lowest('$PCC_MIN' .. op, pcc)
          count('$PCC_HIST' .. op .. '$SEP' .. pcc_bucket, 1)
        end
        if e2e_bucket ~= '' then count('$E2E_HIST' .. op .. '$SEP' .. e2e_bucket, 1) end
        if listed == '1' then stage(failed_new, failed_order, vector, record) end
      end
      if tonumber(tries[vector] or '0') < attempt then  -- its claim is gone (a Redis restarted without it)
        tries[vector] = attempt
        stage(tries_new, tries_order, vector, attempt)
      end
    end
  end
end

-- 3. the agg hash's new values, from the ones there now
local agg_new, at = {}, 0
local function put(name, v)
  agg_new[at + 1], agg_new[at + 2] = name, v
  at = at + 2
end
local read = {}
for _, names in ipairs({counted, firsts, lowered}) do
  for _, name in ipairs(names) do read[#read + 1] = name end
end
local stored = fetch('HMGET', agg, read, {})
for _, name in ipairs(counted) do
  local there = stored[name]
  if there and not string.match(there, '^%-?%d+$$') then
    return redis.error_reply('ERR hash value is not an integer: ' .. agg .. ' ' .. name)
  end
  put(name, string.format('%d', (tonumber(there) or 0) + delta[name]))
end
for _, name in ipairs(firsts) do
  if not stored[name] then put(name, first_value[name]) end
end
if t_last then put('$T_LAST', t_last) end
for _, name in ipairs(lowered) do
  local there = stored[name]
  local low = there
  for _, pcc in ipairs(pccs[name]) do
    if (not low) or tonumber(pcc) < tonumber(low) then low = pcc end
  end
  if low ~= there then put(name, low) end
end

-- 4. write, once every write is known to succeed
local function split(new, order)  -- {field, value, ...} to HSET, {field, ...} to HDEL
  local set, del = {}, {}
  for _, field in ipairs(order) do
    if new[field] then
      set[#set + 1] = field
      set[#set + 1] = new[field]
    else
      del[#del + 1] = field
    end
  end
  return set, del
end
local failed_set, failed_del = split(failed_new, failed_order)
if #failed_order > 0 then redis.call('HLEN', failed) end  -- the one key steps 1 and 3 did not read
local tries_set, tries_del = split(tries_new, tries_order)
local function may(needed, cmd, key, ...)
  if needed and not redis.acl_check_cmd(cmd, key, ...) then
    error({err = 'NOPERM this user may not run ' .. cmd .. ' on ' .. key .. ': nothing written'})
  end
end
local final_set, final_del = false, false
for i = 2, #final_log, 2 do
  if final_log[i] then final_set = true else final_del = true end
end
may(#new_records > 0, 'HSETNX', records, 'f', 'v')
may(final_set, 'HSETNX', final, 'f', 'v')
may(final_del, 'HDEL', final, 'f')
may(#failed_set > 0, 'HSET', failed, 'f', 'v')
may(#failed_del > 0, 'HDEL', failed, 'f')
may(#tries_set > 0, 'HSET', attempts, 'f', 'v')
may(#tries_del > 0, 'HDEL', attempts, 'f')
may(#freed > 0, 'DEL', freed[1])
may(at > 0, 'HSET', agg, 'f', 'v')
for i = 1, #new_records, 2 do redis.call('HSETNX', records, new_records[i], new_records[i + 1]) end
for i = 1, #final_log, 2 do
  if final_log[i + 1] then
    redis.call('HSETNX', final, final_log[i], final_log[i + 1])  -- the worker's ACL allows no overwrite of a final
  else
    redis.call('HDEL', final, final_log[i])
  end
end
send('HSET', failed, failed_set)
send('HDEL', failed, failed_del)
send('HSET', attempts, tries_set)
send('HDEL', attempts, tries_del)
send('DEL', nil, freed)
send('HSET', agg, agg_new)
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
# once the vector is final or its run canceled. KEYS: final, attempts, records, lost. ARGV: CLAIM (lease
# value, lease ttl (s), lost attempts that end a vector, record field separator, the run's hash and
# vectors: only read, so not KEYS, which a worker's ACL user must be able to write), then (vector id,
# lease key) pairs. Returns per vector {code, attempt, lost, payload}:
#   R run it as `attempt` (lost = 1: the attempt before died with its worker: no record, no lease)
#   F final already | L another worker holds it | M not in the run
#   X the run is canceled (payload: for booking it CANCELED) | D its attempt `attempt` was lost, the
#   vector's `max_lost`th lost attempt: book that attempt INFRA, final (payload given)
# The lost hash counts each vector's lost attempts: an R that finds the attempt before lost raises it
# (a D writes nothing). Not the attempt number: a retry's or a crash retry's new attempt is no loss.
# A lease that holds this very value is this claim resent after a lost reply: the same answer again.
CLAIM = LuaArgs(("value", "ttl", "max_lost", "sep", "run", "vectors"))
_CLAIM = Template(_LUA_BATCH + """
local final, attempts, records, lost_count = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
$CLAIM_ARGS
max_lost = tonumber(max_lost)
local canceled = redis.call('HGET', run, 'state') == 'canceled'
local vids, leases = {}, {}
for i = $PAIRS, #ARGV, 2 do
  vids[#vids + 1] = ARGV[i]
  leases[#leases + 1] = ARGV[i + 1]
end
-- read all at once: a vector listed twice gets the same answer twice (its second claim is its first one
-- resent), so the values read before any claim answer for every entry
local tries = fetch('HMGET', attempts, vids, {})
local payloads = fetch('HMGET', vectors, vids, {})
local finals = fetch('HMGET', final, vids, {})
local holders = fetch('MGET', nil, leases, {})
local wanted, counts = {}, {}  -- the record of the attempt before, which tells whether it was lost; its count
for i, vid in ipairs(vids) do
  local tried, holder = tonumber(tries[vid] or '0'), holders[leases[i]]
  if not finals[vid] and payloads[vid] then
    if holder == value and tried > 1 then
      wanted[#wanted + 1] = vid .. sep .. (tried - 1)
    elseif not holder and not canceled and tried > 0 then
      wanted[#wanted + 1] = vid .. sep .. tried
      counts[#counts + 1] = vid
    end
  end
end
local recorded = fetch('HMGET', records, wanted, {})
local lost_before = fetch('HMGET', lost_count, counts, {})
local out, bumped, taken, losses = {}, {}, {}, {}
for i, vid in ipairs(vids) do
  local lease = leases[i]
  local tried, payload, holder = tonumber(tries[vid] or '0'), payloads[vid], holders[lease]
  if finals[vid] then
    out[#out + 1] = {'F', tried, 0}
  elseif not payload then
    out[#out + 1] = {'M', tried, 0}
  elseif holder == value then
    local lost = (tried > 1 and not recorded[vid .. sep .. (tried - 1)]) and 1 or 0
    out[#out + 1] = {'R', tried, lost, payload}
  elseif holder then
    out[#out + 1] = {'L', tried, 0}
  elseif canceled then
    out[#out + 1] = {'X', tried, 0, payload}
  else
    local lost = (tried > 0 and not recorded[vid .. sep .. tried]) and 1 or 0
    local lost_now = lost == 1 and tonumber(lost_before[vid] or '0') + 1
    if lost_now and lost_now >= max_lost then
      out[#out + 1] = {'D', tried, 1, payload}
    else
      if lost_now then
        losses[#losses + 1] = vid
        losses[#losses + 1] = lost_now
      end
      bumped[#bumped + 1] = vid
      bumped[#bumped + 1] = tried + 1
      taken[#taken + 1] = lease
      out[#out + 1] = {'R', tried + 1, lost, payload}
    end
  end
end
-- the lost counts, then the attempt counters, in one command each: a lease never exists without its
-- attempt's number, nor a new attempt after a lost one without the loss counted
if #losses > 0 and not redis.acl_check_cmd('HSET', lost_count, 'f', 'v') then
  return redis.error_reply('NOPERM this user may not run HSET on ' .. lost_count .. ': nothing written')
end
send('HSET', lost_count, losses)
send('HSET', attempts, bumped)
for _, lease in ipairs(taken) do redis.call('SET', lease, value, 'EX', ttl) end
return out
""").substitute(CLAIM_ARGS=CLAIM.lua("ARGV"), PAIRS=len(CLAIM.fields) + 1)

# Renew leases this worker still holds (a lease whose value changed was taken over: not renewed).
# KEYS: lease keys; ARGV: ttl, then one value per key. Returns the indexes (1-based) of the lost ones.
_RENEW = _LUA_BATCH + """
local held = fetch('MGET', nil, KEYS, {})
local lost = {}
for i, key in ipairs(KEYS) do
  if held[key] == ARGV[i + 1] then redis.call('EXPIRE', key, ARGV[1]) else lost[#lost + 1] = i end
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
        replies = self._claim(keys=[k.final(run_id), k.attempts(run_id), k.records(run_id), k.lost(run_id)], args=args)
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
