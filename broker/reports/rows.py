"""One joined row per vector of a run: the vector, its final outcome and its final record.

Exports, expectations and the per-model view need every vector, not the aggregates; this is the
one place that reads a run in full (vectors, final hash, records), in large pages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from broker.keys import Keys
from broker.results import decode_record, parse_final
from sweeps.vector import decode, tensor_slots
from tracer.store import model_of

PAGE = 5000
PENDING = "pending"


@dataclass
class Row:
    vector: dict[str, Any]
    status: str  # final status, or "pending" while the run is not complete
    pcc: float | None
    e2e_ms: float | None
    signature_id: str
    record: dict[str, Any] = field(default_factory=dict)  # the final attempt's record ({} while pending)

    @property
    def id(self) -> str:
        return self.vector["id"]

    @property
    def models(self) -> list[str]:
        return sorted({model_of(source) for source in self.vector.get("sources") or []})

    @property
    def elements(self) -> int:
        """Input elements over every tensor argument: the x axis of e2e-against-size plots."""
        return sum(math.prod(tensor.get("shape") or [0]) for _, tensor in tensor_slots(self.vector))


def rows(redis: Any, keys: Keys, run_id: str) -> list[Row]:
    """Every vector of the run, sorted by op, machine and id."""
    finals = redis.hgetall(keys.final(run_id))
    best: dict[str, dict[str, Any]] = {}  # vector id -> record of its final attempt
    for _, raw in redis.hscan_iter(keys.records(run_id), count=PAGE):
        record = decode_record(raw)
        final = finals.get(record["vector"].encode())
        if final is None or parse_final(final)[0] != record["status"]:
            continue
        kept = best.get(record["vector"])
        if kept is None or record["attempt"] > kept["attempt"]:
            best[record["vector"]] = record
    out = []
    for vid, raw in redis.hscan_iter(keys.vectors(run_id), count=PAGE):
        vector = decode(raw)
        final = finals.get(vid)
        if final is None:
            out.append(Row(vector, PENDING, None, None, ""))
            continue
        state, pcc, e2e, sig = parse_final(final)
        out.append(Row(vector, state, pcc, e2e, sig, best.get(vector["id"], {})))
    out.sort(key=lambda row: (row.vector["op"], row.vector["machine"], row.id))
    return out
