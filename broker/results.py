"""Attempts and records: one record per attempt, written once, with the run's aggregates updated
in the same atomic step (a Lua script), so a report never scans results.

`begin` starts an attempt (skipped when the vector already has a final record: a redelivered
chunk); `finish` writes the record with HSETNX and, the first time a vector reaches a final
status, bumps the counters. Aggregates (`{p}:run:R:agg` fields):

  done, t_first, t_last              vectors with a final status; first/last finish (unix s)
  s|STATUS  os|OP|STATUS  ms|MACHINE|STATUS      counts
  pmin|OP                            lowest PCC of an executed vector
  ph|OP|B                            PCC histogram, B = floor(10 * -log10(1 - pcc)), capped at 120
  b|BACKEND                          executed vectors per backend (emulated results say so)
  eh|OP|B                            e2e histogram, B = floor(8 * log2(ms * 1000)) (microseconds)
Histograms give the median PCC to a tenth of a decade of (1 - PCC) and e2e percentiles to 9%.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

import msgpack

from broker.keys import Keys
from sweeps import status

_BEGIN = """
-- KEYS: final, attempts, lease, worker ; ARGV: vector id, worker name, lease ttl
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return -1 end
local attempt = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[3])
redis.call('HSET', KEYS[4], 'current', ARGV[1])
return attempt
"""

_FINISH = """
-- KEYS: records, final, agg, failed, lease, worker
-- ARGV: field, record, vector id, status, is_final, op, machine, executed, pcc, pcc bucket, e2e bucket, failed, now,
--       backend
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('DEL', KEYS[5])
if KEYS[6] ~= '' then redis.call('HSET', KEYS[6], 'current', '') end
if ARGV[5] ~= '1' then return 1 end
if redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4]) == 0 then return 2 end
local agg = KEYS[3]
redis.call('HINCRBY', agg, 'done', 1)
redis.call('HSETNX', agg, 't_first', ARGV[13])
redis.call('HSET', agg, 't_last', ARGV[13])
redis.call('HINCRBY', agg, 's|' .. ARGV[4], 1)
redis.call('HINCRBY', agg, 'os|' .. ARGV[6] .. '|' .. ARGV[4], 1)
redis.call('HINCRBY', agg, 'ms|' .. ARGV[7] .. '|' .. ARGV[4], 1)
if ARGV[9] ~= '' then
  local key = 'pmin|' .. ARGV[6]
  local cur = redis.call('HGET', agg, key)
  if (not cur) or tonumber(ARGV[9]) < tonumber(cur) then redis.call('HSET', agg, key, ARGV[9]) end
  redis.call('HINCRBY', agg, 'ph|' .. ARGV[6] .. '|' .. ARGV[10], 1)
end
if ARGV[11] ~= '' then redis.call('HINCRBY', agg, 'eh|' .. ARGV[6] .. '|' .. ARGV[11], 1) end
if ARGV[8] == '1' then redis.call('HINCRBY', agg, 'b|' .. ARGV[14], 1) end
if ARGV[12] == '1' then redis.call('HSET', KEYS[4], ARGV[3], ARGV[2]) end
return 1
"""

PCC_BUCKET_MAX = 120
_SIGNATURE_SUBS = (
    (re.compile(r"0x[0-9a-fA-F]+"), "<addr>"),
    (re.compile(r"[\[(\{]\s*-?\d+(?:\s*,\s*-?\d+)+\s*[\])\}]"), "<shape>"),
    (re.compile(r"(?<![A-Za-z_])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def signature(message: str) -> str:
    """An error message without its addresses, shapes and numbers: failures with one cause group."""
    text = message.split(" backtrace", 1)[0]
    for pattern, repl in _SIGNATURE_SUBS:
        text = pattern.sub(repl, text)
    return text.strip()[:300]


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


class Results:
    """Writes attempts for one worker (or the coordinator, for vectors that never run)."""

    def __init__(self, redis: Any, keys: Keys, worker: str = "") -> None:
        self.redis = redis
        self.keys = keys
        self.worker = worker
        self._begin = redis.register_script(_BEGIN)
        self._finish = redis.register_script(_FINISH)

    def begin(self, run_id: str, vector_id: str, lease_ttl: int) -> int:
        """The attempt number now starting, or -1 when the vector already has a final record."""
        keys = self.keys
        return int(
            self._begin(
                keys=[
                    keys.final(run_id),
                    keys.attempts(run_id),
                    keys.lease(run_id, vector_id),
                    keys.worker(self.worker),
                ],
                args=[vector_id, self.worker, lease_ttl],
            )
        )

    def finish(self, record: dict[str, Any], final: bool = True, pipe: Any = None) -> None:
        """Write one attempt's record once; aggregates move only on a vector's first final record."""
        keys = self.keys
        run_id, vector_id = record["run"], record["vector"]
        pcc = record.get("pcc")
        e2e = record.get("e2e_ms")
        executed = status.is_executed(record["status"])
        self._finish(
            keys=[
                keys.records(run_id),
                keys.final(run_id),
                keys.agg(run_id),
                keys.failed(run_id),
                keys.lease(run_id, vector_id),
                keys.worker(self.worker) if self.worker else "",
            ],
            args=[
                keys.record_field(vector_id, record["attempt"]),
                msgpack.packb(record, use_bin_type=True),
                vector_id,
                record["status"],
                "1" if final else "0",
                record["op"],
                record["machine"],
                "1" if executed else "0",
                repr(pcc) if executed and pcc is not None else "",
                str(pcc_bucket(pcc)) if executed and pcc is not None else "",
                str(e2e_bucket(e2e)) if executed and e2e is not None else "",
                "1" if record["status"] in status.FAILED else "0",
                repr(time.time()),
                record["backend"],
            ],
            client=pipe,
        )


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
