"""Attempts and records: one record per attempt, written once, with the run's aggregates updated
in the same atomic step (a Lua script), so a report never scans results.

`claim` reads a chunk's vectors, final statuses and attempt counters in one round trip: a
redelivered chunk skips vectors that already have a final record. `start` records an attempt
(its number, and a lease with a TTL the heartbeat renews); `finish`
writes the attempt's record with HSETNX and, the first time a vector reaches a final status,
bumps the counters. Both are idempotent, so a writer may resend them after a lost connection.
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
from dataclasses import dataclass
from typing import Any

import msgpack

from broker.keys import Keys
from sweeps import status

# Operations travel as one msgpack blob per script call (redis-py spends more packing many small
# arguments than Redis spends running the script). KEYS: records, final, agg, failed, attempts.
_WRITE = """
local ops = cmsgpack.unpack(ARGV[1])
local records, final, agg, failed, attempts = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
for _, op in ipairs(ops) do
  if op[1] == 's' then
    -- start: vector id, attempt, lease key, worker, ttl
    redis.call('HSET', attempts, op[2], op[3])
    redis.call('SET', op[4], op[5], 'EX', op[6])
  elseif op[1] == 'u' then
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
    -- release: vector id, attempts before, lease key (an attempt started that never ran)
    redis.call('DEL', op[4])
    if op[3] > 0 then redis.call('HSET', attempts, op[2], op[3]) else redis.call('HDEL', attempts, op[2]) end
  elseif op[1] == 'F' then
    -- finish many vectors that never ran, with one outcome (the coordinator's NOT_RUN/INVALID):
    --   status, op, machine, now, final summary, sig id, signature, {field, record, vector id, ...}
    local n, items, example = 0, op[9], nil
    for i = 1, #items, 3 do
      if redis.call('HSETNX', records, items[i], items[i + 1]) == 1
          and redis.call('HSETNX', final, items[i + 2], op[6]) == 1 then
        n = n + 1
        example = example or items[i + 2]
      end
    end
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
  elseif redis.call('HSETNX', records, op[2], op[3]) == 1 then
    -- finish: field, record, vector id, status, final, op, machine, executed, pcc, pcc bucket,
    --         e2e bucket, failed, now, backend, lease key, final summary, sig id, signature
    if op[16] ~= '' then redis.call('DEL', op[16]) end
    if op[6] == '1' and redis.call('HSETNX', final, op[4], op[17]) == 1 then
      local name, st = op[7], op[5]
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
return #ops
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


RUN, FINAL, LEASED = "run", "final", "leased"


@dataclass
class Claim:
    """One vector of a claimed chunk: its payload, what to do, and the attempts before."""

    vector_id: str
    payload: bytes | None
    action: str  # RUN, FINAL (skip: it has a final record) or LEASED (skip: running elsewhere)
    tried: int  # attempts started before this claim
    lost: bool = False  # the last of them died with its worker: no record, no lease

    @property
    def attempt(self) -> int:
        return self.tried + 1


class Results:
    """Reads and writes one run's attempts, for a worker (or the coordinator, for vectors that never run)."""

    def __init__(self, redis: Any, keys: Keys, worker: str = "") -> None:
        self.redis = redis
        self.keys = keys
        self.worker = worker
        self._write = redis.register_script(_WRITE)

    def claim(self, run_id: str, ids: list[str]) -> list[Claim]:
        """What to do with each vector of a chunk, in one round trip (two when attempts came before):
        run it (with its attempt number), or skip it because it is final, or because another
        worker holds its lease right now (a chunk redelivered past the visibility timeout must not
        run it twice). An earlier attempt with neither a record nor a lease died with its worker."""
        keys = self.keys
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(keys.vectors(run_id), ids)
        pipe.hmget(keys.final(run_id), ids)
        pipe.hmget(keys.attempts(run_id), ids)
        payloads, finals, attempts = pipe.execute()
        claims = [
            Claim(vid, payload, FINAL if done is not None else RUN, int(tried or 0))
            for vid, payload, done, tried in zip(ids, payloads, finals, attempts, strict=True)
        ]
        retried = [c for c in claims if c.action == RUN and c.tried]
        if retried:
            for claim in retried:
                pipe.exists(keys.lease(run_id, claim.vector_id))
                pipe.hexists(keys.records(run_id), keys.record_field(claim.vector_id, claim.tried))
            found = pipe.execute()
            for claim, leased, recorded in zip(retried, found[::2], found[1::2], strict=True):
                if leased:
                    claim.action = LEASED
                elif not recorded:
                    claim.lost = True
        return claims

    def start_op(self, run_id: str, vector_id: str, attempt: int, lease_ttl: int) -> list[Any]:
        return ["s", vector_id, attempt, self.keys.lease(run_id, vector_id), self.worker, lease_ttl]

    def unfinal_op(self, record: dict[str, Any]) -> list[Any]:
        """Take a vector's final record out of the aggregates (the record itself stays), for a retry.
        The lowest PCC is kept: it was seen, and a minimum cannot be taken back."""
        f = self.finish_op(record)
        return ["u", record["vector"], record["status"], record["op"], record["machine"], f[8], f[10], f[11], f[14],
                f[17]]  # fmt: skip

    def release_op(self, run_id: str, vector_id: str, attempt: int) -> list[Any]:
        """Undo the start of an attempt that never ran (its worker gave the chunk back)."""
        return ["r", vector_id, attempt - 1, self.keys.lease(run_id, vector_id)]

    def finish_op(self, record: dict[str, Any], final: bool = True) -> list[Any]:
        pcc = record.get("pcc")
        e2e = record.get("e2e_ms")
        executed = status.is_executed(record["status"])
        measured = executed and pcc is not None
        lease = self.keys.lease(record["run"], record["vector"]) if record["attempt"] else ""
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
            "1" if record["status"] in status.FAILED else "0",
            repr(time.time()),
            record["backend"],
            lease,
            final_summary(record, sig),
            sig,
            record["signature"] if sig else "",
        ]

    def finish_unrun_op(self, template: dict[str, Any], vectors: list[tuple[str, str | None, str]]) -> list[Any]:
        """Finish many vectors that never ran, with one status and signature (the coordinator's
        NOT_RUN or INVALID of one op and machine): `template` is the record of any of them,
        `vectors` their (id, config_hash, message). Each gets its record; the aggregates move
        once, by the count of new finals."""
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
        return ["F", template["status"], template["op"], template["machine"], repr(time.time()), summary, sig,
                template["signature"] if sig else "", items]  # fmt: skip

    def write(self, run_id: str, ops: list[list[Any]], pipe: Any = None) -> None:
        """Apply start/finish ops of one run in order, in one script call."""
        keys = self.keys
        names = [keys.records(run_id), keys.final(run_id), keys.agg(run_id), keys.failed(run_id), keys.attempts(run_id)]
        blob = msgpack.packb(ops, use_bin_type=False)  # Redis's cmsgpack does not read the bin type
        self._write(keys=names, args=[blob], client=pipe)

    def start(self, run_id: str, vector_id: str, attempt: int, lease_ttl: int = 30) -> None:
        self.write(run_id, [self.start_op(run_id, vector_id, attempt, lease_ttl)])

    def finish(self, record: dict[str, Any], final: bool = True) -> None:
        """Write one attempt's record once; aggregates move only on a vector's first final record."""
        self.write(record["run"], [self.finish_op(record, final)])


def make_record(
    vector: dict[str, Any], run_id: str, attempt: int, outcome: dict[str, Any], **where: Any
) -> dict[str, Any]:
    """The one record shape (DESIGN.md §3 Result): outcome fields plus who ran it where."""
    message = outcome.get("message") or ""
    return {
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
        "device_perf": outcome.get("device_perf"),
        "backend": where.get("backend", ""),
        "worker": where.get("worker", ""),
        "host": where.get("host", ""),
        "devices": where.get("devices", []),
        "ttnn_version": where.get("ttnn_version", ""),
        "start": where.get("start"),
        "end": where.get("end"),
    }


def decode_record(payload: bytes) -> dict[str, Any]:
    return msgpack.unpackb(payload, raw=False)
