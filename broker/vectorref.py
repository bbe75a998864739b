"""One vector found by what a person has at hand, for `sweepctl run` and `sweepctl repro`.

In a run in Redis: a vector id, or a unique prefix of one (reports print 12 characters). In a
master store, without Redis: a vector id or a config hash (or a unique prefix of either), the
store expanded as `enqueue --suite model_traced` expands it (its index, the traced machine or
`--machine`), host-validated as enqueue validates it. Either way a vector that enqueue books
NOT_RUN or INVALID comes with that verdict: no worker ever runs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sweeps import status
from tracer.errors import InputError

_REF = re.compile(r"^[0-9a-f]{6,64}$")
SHOWN = 5  # candidates named when a prefix is ambiguous


@dataclass
class Found:
    vector: dict[str, Any]
    where: str  # "run R" / "store S": said in the output
    run_id: str | None
    never_runs: dict[str, Any] | None = None  # enqueue's NOT_RUN / INVALID outcome: no worker runs it


def check_ref(ref: str) -> str:
    if not _REF.match(ref):
        raise InputError(f"vector {ref!r}", "expected a vector id or config hash (6 to 64 hex digits)")
    return ref


def in_run(client: Any, keys: Any, run_id: str, ref: str) -> Found:
    """The vector `ref` names in a run, with enqueue's verdict when it booked it NOT_RUN/INVALID."""
    from broker.results import decode_record
    from sweeps.vector import decode

    check_ref(ref)
    if not client.exists(keys.run(run_id)):
        raise InputError(f"run {run_id}", "no such run (see `sweepctl runs`)")
    payload = client.hget(keys.vectors(run_id), ref)
    vid = ref
    if payload is None:
        matches = [k.decode() for k, _ in client.hscan_iter(keys.vectors(run_id), match=f"{ref}*", count=1000)]
        vid = _one(ref, sorted(matches), f"run {run_id}", "id")
        payload = client.hget(keys.vectors(run_id), vid)
    found = Found(decode(payload), f"run {run_id}", run_id)
    record = client.hget(keys.records(run_id), keys.record_field(vid, 0))  # attempt 0: booked by enqueue
    if record is not None:
        booked = decode_record(record)
        if booked["status"] in (status.NOT_RUN, status.INVALID):
            found.never_runs = {"status": booked["status"], "message": booked.get("message") or ""}
    return found


def in_store(path: str, ref: str, machine: str | None = None) -> Found:
    """The model_traced vector `ref` names in a store (vector id or config hash), as enqueue makes it."""
    from sweeps.index import load
    from sweeps.suites import Selection, expand

    check_ref(ref)
    expansion = expand(load(path), Selection(machine=machine))
    matches = {v.id: v for v in expansion.vectors if v.id.startswith(ref) or (v.config_hash or "").startswith(ref)}
    where = f"store {path}" + (f" on {machine}" if machine else "")
    labels = {i: f"{v.op} on {v.machine}" for i, v in matches.items()}
    vid = _one(ref, sorted(matches), where, "id or config hash", labels)
    encoded = matches[vid]
    found = Found(encoded.decoded(), where, None)
    reason = expansion.not_run.get(vid)
    if reason is not None:
        found.never_runs = {"status": status.NOT_RUN, "message": reason}
    else:
        invalid = host_invalid(found.vector)
        if invalid is not None:
            found.never_runs = {"status": status.INVALID, "message": invalid}
    return found


def host_invalid(vector: dict[str, Any]) -> str | None:
    """Enqueue's INVALID reason for a vector (the first tensor host validation rejects), or None."""
    from sweeps.validate import validate_tensors
    from sweeps.vector import tensor_slots

    slots = list(tensor_slots(vector))
    reasons = validate_tensors([t for _, t in slots], vector["machine"]) if slots else []
    return next((f"input {slot}: {r}" for (slot, _), r in zip(slots, reasons, strict=True) if r), None)


def _one(ref: str, matches: list[str], where: str, what: str, labels: dict[str, str] | None = None) -> str:
    if not matches:
        raise InputError(f"vector {ref}", f"no vector of {where} has this {what}")
    if len(matches) > 1:
        named = ", ".join(f"{m}" + (f" ({labels[m]})" if labels else "") for m in matches[:SHOWN])
        more = f" and {len(matches) - SHOWN} more" if len(matches) > SHOWN else ""
        raise InputError(f"vector {ref}", f"matches {len(matches)} vectors of {where}: {named}{more}; give more digits")
    return matches[0]
