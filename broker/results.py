"""Attempts and records: one record per attempt, written once, with the run's aggregates updated
in the same atomic step (a Lua script), so a report never scans results.

`begin` starts an attempt (skipped when the vector already has a final record: a redelivered
chunk); `finish` writes the record with HSETNX and, the first time a vector reaches a final
status, bumps the counters; `step` does both in one round trip (a worker's hot path).
Aggregates (`{p}:run:R:agg` fields):

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

# One script, two optional halves, so a worker pays one round trip per vector: the record of the
# vector it just ran, and the start of the next one.
_STEP = """
-- KEYS 1-6 finish: records, final, agg, failed, lease, worker | KEYS 7-9 begin: final, attempts, lease
-- ARGV 1: '1' when finishing; 2-15 the finish fields (see finish_args); 16: '1' when beginning;
-- 17-19: vector id, worker name, lease ttl. Returns the begun attempt, -1 when that vector is
-- already final, 0 when nothing was begun.
if ARGV[1] == '1' and redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3]) == 1 then
  redis.call('DEL', KEYS[5])
  if KEYS[6] ~= '' then redis.call('HSET', KEYS[6], 'current', '') end
  if ARGV[6] == '1' and redis.call('HSETNX', KEYS[2], ARGV[4], ARGV[5]) == 1 then
    local agg, op, st = KEYS[3], ARGV[7], ARGV[5]
    redis.call('HINCRBY', agg, 'done', 1)
    redis.call('HSETNX', agg, 't_first', ARGV[14])
    redis.call('HSET', agg, 't_last', ARGV[14])
    redis.call('HINCRBY', agg, 's|' .. st, 1)
    redis.call('HINCRBY', agg, 'os|' .. op .. '|' .. st, 1)
    redis.call('HINCRBY', agg, 'ms|' .. ARGV[8] .. '|' .. st, 1)
    if ARGV[9] == '1' then redis.call('HINCRBY', agg, 'b|' .. ARGV[15], 1) end
    if ARGV[10] ~= '' then
      local key = 'pmin|' .. op
      local cur = redis.call('HGET', agg, key)
      if (not cur) or tonumber(ARGV[10]) < tonumber(cur) then redis.call('HSET', agg, key, ARGV[10]) end
      redis.call('HINCRBY', agg, 'ph|' .. op .. '|' .. ARGV[11], 1)
    end
    if ARGV[12] ~= '' then redis.call('HINCRBY', agg, 'eh|' .. op .. '|' .. ARGV[12], 1) end
    if ARGV[13] == '1' then redis.call('HSET', KEYS[4], ARGV[4], ARGV[3]) end
  end
end
if ARGV[16] ~= '1' then return 0 end
if redis.call('HEXISTS', KEYS[7], ARGV[17]) == 1 then return -1 end
local attempt = redis.call('HINCRBY', KEYS[8], ARGV[17], 1)
redis.call('SET', KEYS[9], ARGV[18], 'EX', ARGV[19])
if KEYS[6] ~= '' then redis.call('HSET', KEYS[6], 'current', ARGV[17]) end
return attempt
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
        self._step = redis.register_script(_STEP)

    def step(
        self,
        finished: dict[str, Any] | None,
        begin: tuple[str, str] | None,
        lease_ttl: int = 30,
        final: bool = True,
        pipe: Any = None,
    ) -> int:
        """Write `finished` (once) and begin the attempt of `begin` = (run, vector) in one round trip.
        Returns the attempt begun, -1 when that vector already has a final record, 0 if none."""
        keys = self.keys
        worker_key = keys.worker(self.worker) if self.worker else ""
        if finished is not None:
            run_id, vector_id = finished["run"], finished["vector"]
            head = [keys.records(run_id), keys.final(run_id), keys.agg(run_id), keys.failed(run_id)]
            head += [keys.lease(run_id, vector_id), worker_key]
            args = ["1", *_finish_args(finished, final)]
        else:
            head, args = ["", "", "", "", "", worker_key], ["0"] + [""] * 14
        if begin is not None:
            run_id, vector_id = begin
            tail = [keys.final(run_id), keys.attempts(run_id), keys.lease(run_id, vector_id)]
            args += ["1", vector_id, self.worker, str(lease_ttl)]
        else:
            tail, args = ["", "", ""], args + ["0", "", "", ""]
        result = self._step(keys=head + tail, args=args, client=pipe)
        return 0 if pipe is not None else int(result)  # a pipeline answers when it executes

    def begin(self, run_id: str, vector_id: str, lease_ttl: int) -> int:
        """The attempt number now starting, or -1 when the vector already has a final record."""
        return self.step(None, (run_id, vector_id), lease_ttl)

    def finish(self, record: dict[str, Any], final: bool = True, pipe: Any = None) -> None:
        """Write one attempt's record once; aggregates move only on a vector's first final record."""
        self.step(record, None, final=final, pipe=pipe)


def _finish_args(record: dict[str, Any], final: bool) -> list[str | bytes]:
    pcc = record.get("pcc")
    e2e = record.get("e2e_ms")
    executed = status.is_executed(record["status"])
    measured = executed and pcc is not None
    return [
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
    ]


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
