"""`sweepctl report RUN --compare BASE`: what changed between two runs, and whether RUN regressed.

Vectors are joined on their id (op, machine, mesh, inputs, kwargs); a vector of one run whose id
the other lacks is joined on (config_hash, machine) when both have one, so a re-traced store whose
ids moved still compares. Only executed outcomes compare: a vector that hit INFRA, ERROR, EXPIRED
or CANCELED in either run is "not comparable", never a regression. An ERROR is sweepctl's own
failure, never the op's regression: a new ERROR signature is listed on its own
(`new_error_signatures`), and the report fails on any ERROR anyway. Everything is read from the two
runs' final hashes (`STATUS|pcc|e2e|SIG` per vector) in two HGETALLs, so two 1,000,000-vector
runs compare in seconds; vector payloads are read only for the vectors that changed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from broker.coordinator import require_run
from broker.keys import Agg, Keys
from broker.reports.summary import failure_buckets, read_agg
from broker.results import parse_final
from sweeps import status
from sweeps.vector import decode

PCC_TOLERANCE = 0.001  # absolute PCC drop that counts, between two executed vectors
E2E_TOLERANCE_PCT = 25.0  # e2e slowdown that counts, on vectors that passed in both runs
E2E_FLOOR_MS = 0.05  # ...and never below this absolute difference (timer noise on tiny ops)
LISTED = 50  # vectors listed per change kind (the counts are always complete)


@dataclass(frozen=True)
class Tolerances:
    pcc: float = PCC_TOLERANCE
    e2e_pct: float = E2E_TOLERANCE_PCT
    e2e_floor_ms: float = E2E_FLOOR_MS
    perf_regresses: bool = True  # e2e regressions set the exit code too


def _finals(redis: Any, keys: Keys, run_id: str) -> dict[bytes, bytes]:
    return redis.hgetall(keys.final(run_id))


def _rejoin(redis: Any, keys: Keys, base_id: str, run_id: str, only_base: list[bytes], only_run: list[bytes]):
    """Pairs (base vector id, run vector id) for ids present in one run only, by config_hash and machine."""
    def index(rid: str, ids: list[bytes]) -> dict[tuple[str, str], bytes]:
        out = {}
        for start in range(0, len(ids), 5000):
            chunk = ids[start : start + 5000]
            for vid, raw in zip(chunk, redis.hmget(keys.vectors(rid), chunk), strict=True):
                if raw is not None:
                    vector = decode(raw)
                    if vector.get("config_hash"):
                        out[(vector["config_hash"], vector["machine"])] = vid
        return out

    if not only_base or not only_run:
        return []
    base_index, run_index = index(base_id, only_base), index(run_id, only_run)
    return [(base_index[k], run_index[k]) for k in base_index.keys() & run_index.keys()]


def compare(redis: Any, keys: Keys, run_id: str, base_id: str, tol: Tolerances = Tolerances()) -> dict[str, Any]:
    require_run(redis, keys, run_id)
    require_run(redis, keys, base_id)
    with ThreadPoolExecutor(max_workers=2) as pool:  # Redis serialises one hash while we parse the other
        base, run = pool.map(lambda rid: _finals(redis, keys, rid), (base_id, run_id))
    common = base.keys() & run.keys()
    only_base = [vid for vid in base if vid not in common] if len(common) < len(base) else []
    only_run = [vid for vid in run if vid not in common] if len(common) < len(run) else []
    rejoined = _rejoin(redis, keys, base_id, run_id, only_base, only_run)
    changes: dict[str, list[tuple[bytes, tuple, tuple]]] = {
        "newly_failing": [], "newly_passing": [], "pcc_drops": [], "e2e_regressions": [],
    }  # fmt: skip
    executed = {s.encode() for s in status.EXECUTED}
    passed = status.PASS.encode()
    slower, floor, pcc_tol = 1.0 + tol.e2e_pct / 100.0, tol.e2e_floor_ms, tol.pcc
    compared = not_comparable = 0
    # the hot loop works on the raw `STATUS|pcc|e2e|SIG` bytes: floats are parsed only when compared
    for base_vid, run_vid in itertools.chain(zip(common, common, strict=True), rejoined):
        b_raw, r_raw = base[base_vid], run[run_vid]
        bs, bp, be, _ = b_raw.split(b"|")
        rs, rp, re_, _ = r_raw.split(b"|")
        if bs not in executed or rs not in executed:
            not_comparable += 1
            continue
        compared += 1
        if bs == passed:
            if rs != passed:
                changes["newly_failing"].append((run_vid, parse_final(b_raw), parse_final(r_raw)))
                continue
        elif rs == passed:
            changes["newly_passing"].append((run_vid, parse_final(b_raw), parse_final(r_raw)))
            continue
        if bp and rp and float(bp) - float(rp) > pcc_tol:
            changes["pcc_drops"].append((run_vid, parse_final(b_raw), parse_final(r_raw)))
        elif bs == passed == rs and be and re_:
            b_e2e, r_e2e = float(be), float(re_)
            if r_e2e > b_e2e * slower and r_e2e - b_e2e > floor:
                changes["e2e_regressions"].append((run_vid, parse_final(b_raw), parse_final(r_raw)))
    changed = sum(len(items) for items in changes.values())
    counts = {"compared": compared, "not_comparable": not_comparable, "unchanged": compared - changed}
    run_agg, base_agg = read_agg(redis, keys, run_id), read_agg(redis, keys, base_id)
    new_sigs = _new_signatures(run_agg, base_agg, status.is_executed)
    new_errors = _new_signatures(run_agg, base_agg, lambda state: state == status.ERROR)
    listed = {kind: _describe(redis, keys, run_id, items) for kind, items in changes.items()}
    regressions = len(changes["newly_failing"]) + len(changes["pcc_drops"])
    if tol.perf_regresses:
        regressions += len(changes["e2e_regressions"])
    return {
        "run_id": run_id,
        "base_id": base_id,
        "tolerances": {"pcc": tol.pcc, "e2e_pct": tol.e2e_pct, "e2e_floor_ms": tol.e2e_floor_ms},
        **counts,
        "joined_by_config_hash": len(rejoined),
        "only_in_base": len(only_base) - len(rejoined),
        "only_in_run": len(only_run) - len(rejoined),
        "counts": {kind: len(items) for kind, items in changes.items()},
        "changes": listed,
        "new_signatures": new_sigs,
        "new_error_signatures": new_errors,
        "errors": int(run_agg.get(Agg.field(Agg.STATUS, status.ERROR), 0)),
        "regressed": regressions > 0,
    }


def _new_signatures(
    run_agg: dict[str, str], base_agg: dict[str, str], counted: Callable[[str], bool]
) -> list[dict[str, Any]]:
    """Signatures of the run's final records whose status is `counted`, absent from the base's (same
    statuses), biggest first."""
    run_sigs, base_sigs = _signatures(run_agg, counted), _signatures(base_agg, counted)
    return [
        {"signature_id": sig, "signature": text, "count": n}
        for sig, (text, n) in sorted(run_sigs.items(), key=lambda kv: -kv[1][1])
        if sig not in base_sigs
    ]


def _signatures(agg: dict[str, str], counted: Callable[[str], bool]) -> dict[str, tuple[str, int]]:
    """A run's failure signatures with their counts of records whose status is `counted`."""
    out = {}
    for bucket in failure_buckets(agg):
        n = sum(count for state, count in bucket["statuses"].items() if counted(state))
        if n:
            out[bucket["signature_id"]] = (bucket["signature"], n)
    return out


def _describe(redis: Any, keys: Keys, run_id: str, items: list[tuple[bytes, tuple, tuple]]) -> list[dict[str, Any]]:
    """The first LISTED changes of a kind with op, machine and config hash from their vectors."""
    items = sorted(items, key=lambda item: item[0])[:LISTED]
    raws = redis.hmget(keys.vectors(run_id), [vid for vid, _, _ in items]) if items else []
    rows = []
    for (vid, b, r), raw in zip(items, raws, strict=True):
        vector = decode(raw) if raw is not None else {}
        rows.append(
            {
                "vector": vid.decode(),
                "op": vector.get("op", "?"),
                "machine": vector.get("machine", "?"),
                "config_hash": vector.get("config_hash"),
                "base": {"status": b[0], "pcc": b[1], "e2e_ms": b[2]},
                "run": {"status": r[0], "pcc": r[1], "e2e_ms": r[2]},
            }
        )
    return sorted(rows, key=lambda row: (row["op"], row["machine"], row["vector"]))
