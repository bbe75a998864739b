"""THE REFERENCE ORACLE, not product code: broker/results.py's write, claim and renew scripts as they were
before they batched their reads and writes (commit 1a459d4: one redis.call per field per vector), kept
verbatim so tests/test_results_scripts.py can check that the batched scripts leave exactly the state
these leave, op for op. Do not change them to match the product: a difference is what the test is for."""

from __future__ import annotations

from string import Template

from broker.keys import Agg
from broker.results import _WRITE_OPS, CLAIM

REFERENCE_WRITE = Template("""
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

REFERENCE_CLAIM = Template("""
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
REFERENCE_RENEW = """
local lost = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then redis.call('EXPIRE', key, ARGV[1]) else lost[#lost + 1] = i end
end
return lost
"""
