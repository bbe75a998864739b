"""Every config of one master store judged on the emulated path, as a user's `enqueue` and emulated
workers would judge it, without Redis or Celery.

The store is expanded (model_traced, each config on its traced machine); each machine's vectors go
to one child process with that machine's mock cluster descriptor (TT_METAL_MOCK_CLUSTER_DESC_PATH),
which imports ttnn once, host-validates every tensor as the coordinator does (sweeps.validate:
INVALID with ttnn's reason) and runs the rest in-process on workers.emulated.EmulatedBackend, with
the executor's dispatch (no definition -> NOT_RUN; an exception outside the op -> "could not
prepare the vector"). Vectors travel as JSON lines, outcomes come back the same way.

`problem()` says why a verdict is not the truth about the op (None: it is).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sweeps import status
from sweeps.index import load as load_index
from sweeps.profiles import get_profile
from sweeps.suites import Selection, expand
from sweeps.vector import tensor_slots

ROOT = Path(__file__).resolve().parents[1]
BLOCK_FLOATS = frozenset({"BFLOAT8_B", "BFLOAT4_B"})
# NOT_RUN that tells the truth: an argument the trace does not hold in a usable form.
_UNTRACED = re.compile(r"^argument \S+ (could not be read from the trace|was not traced)")


@dataclass(frozen=True)
class Verdict:
    op: str
    machine: str
    vector: str
    status: str
    message: str
    dtypes: tuple[str, ...]  # every tensor dtype of the vector, and an explicit output dtype


def judge_store(path: str) -> list[Verdict]:
    """The verdict of every config of the store at `path`, on the machine it was traced on."""
    expansion = expand(load_index(path), Selection())
    vectors = [(encoded.id, expansion.not_run.get(encoded.id), encoded.decoded()) for encoded in expansion.vectors]
    outcomes = judge_vectors([vector for _, reason, vector in vectors if reason is None])
    verdicts = []
    for vid, reason, vector in vectors:
        outcome = {"status": status.NOT_RUN, "message": reason} if reason is not None else outcomes[vid]
        verdicts.append(
            Verdict(
                vector["op"], vector["machine"], vid, outcome["status"], outcome.get("message") or "", _dtypes(vector)
            )  # fmt: skip
        )
    return verdicts


def _dtypes(vector: dict) -> tuple[str, ...]:
    found = [tensor["dtype"] for _, tensor in tensor_slots(vector)]
    for value in vector["kwargs"].values():
        if isinstance(value, dict) and value.get("enum") == "DataType":
            found.append(value["value"])
    return tuple(found)


def judge_vectors(vectors: list[dict]) -> dict[str, dict]:
    """Outcome by vector id of runnable vectors (decoded), one child process per machine type, the
    machines' children running side by side."""
    by_machine: dict[str, list[dict]] = {}
    for vector in vectors:
        by_machine.setdefault(vector["machine"], []).append(vector)
    outcomes: dict[str, dict] = {}

    def judge(machine: str) -> None:
        env = {**os.environ, "TT_METAL_MOCK_CLUSTER_DESC_PATH": get_profile(machine).mock_cluster_path}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        child = subprocess.run(
            [sys.executable, "-c", f"from tests.emulated_judge import _child; _child({machine!r})"],
            input="".join(json.dumps(v) + "\n" for v in by_machine[machine]),
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
        assert child.returncode == 0 and len(lines) == len(by_machine[machine]), child.stderr[-3000:]
        for vector, line in zip(by_machine[machine], lines, strict=True):
            outcomes[vector["id"]] = json.loads(line)

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(judge, by_machine))
    return outcomes


def _child(machine: str) -> None:
    """Judging child: JSON lines of vectors in, one JSON line of outcome per vector out."""
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # ttnn prints Config{...} at import
        import ttnn
    from sweeps.catalogue import lookup, no_definition_reason
    from sweeps.validate import check_tensor, tensor_key
    from workers.emulated import EmulatedBackend

    profile = get_profile(machine)
    backend = EmulatedBackend(ttnn, machine)
    checked: dict[str, str | None] = {}
    for line in sys.stdin:
        vector = json.loads(line)
        invalid = None
        for slot, tensor in tensor_slots(vector):
            key = tensor_key(tensor)
            if key not in checked:
                checked[key] = check_tensor(ttnn, tensor, profile)
            if checked[key]:
                invalid = f"input {slot}: {checked[key]}"
                break
        opdef = lookup(vector["op"])
        if invalid is not None:
            outcome = {"status": status.INVALID, "message": invalid}
        elif opdef is None:
            outcome = {"status": status.NOT_RUN, "message": no_definition_reason(vector["op"])}
        else:
            try:
                outcome = backend.run(opdef, vector)
            except Exception as exc:  # as the executor books it: sweepctl's own preparation failed
                message = f"could not prepare the vector: {type(exc).__name__}: {exc}"
                outcome = {"status": status.NOT_RUN, "message": message}
        sys.stdout.write(json.dumps(outcome) + "\n")
        sys.stdout.flush()


def problem(verdict: Verdict) -> str | None:
    """Why a verdict is not the truth about the op: an error of ours (an exception from an
    adapter, a golden or the preparation: FAIL_OP on the emulated path, where the golden stands in
    for the op), a missing definition, an accuracy failure without a block-float dtype, a NOT_RUN
    that names no argument. None when the verdict is the truth."""
    if verdict.status in (status.PASS, status.INVALID):
        return None
    if verdict.status == status.FAIL_ACCURACY:
        return (
            None if BLOCK_FLOATS & set(verdict.dtypes) else f"accuracy failure without a block float: {verdict.message}"
        )
    if verdict.status == status.NOT_RUN and _UNTRACED.match(verdict.message):
        return None
    return f"{verdict.status}: {verdict.message}"


def table(verdicts: list[Verdict]) -> str:
    """Per-op status counts, one line per op."""
    per_op: dict[str, Counter] = {}
    for verdict in verdicts:
        per_op.setdefault(verdict.op, Counter())[verdict.status] += 1
    width = max((len(op) for op in per_op), default=0)
    return "\n".join(
        f"{op:<{width}}  " + ", ".join(f"{s} {n}" for s, n in sorted(c.items())) for op, c in sorted(per_op.items())
    )
