"""The corpus: every config of every real store in the repository, judged on the emulated path.

What a user's `sweepctl enqueue` + emulated workers would say about each traced config, without
Redis or Celery: each store is expanded (model_traced, on its traced machine; configs traced
without machine info on the machine a user would pass with --machine), host-validated as the
coordinator does, and every runnable vector is judged by real executor processes of its machine
(`python -m workers.executor <machine> emulated`, spawned by workers.executor.Executor with that
machine's mock cluster descriptor, kept across vectors; a machine with many vectors gets two).

`problems()` names every verdict that is not the truth about the op: an error of ours (a Python
exception from an adapter, a golden or the preparation; on the emulated path the golden stands in
for the op, so any op failure is ours), a "no sweep definition", an accuracy failure that is not
block-float rounding, a NOT_RUN that does not name the argument the trace lacks.

As a script, it prints the per-op status table of the stores named (default: all of them) and
exits 1 when there is a problem:

    PYTHONPATH=$PWD .venv/bin/python -m tests.corpus [-v] [--log] [deepseek add_sweep sample ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import orjson

from sweeps import status
from sweeps.index import load as load_index
from sweeps.suites import Selection, expand
from sweeps.validate import validate_tensors
from sweeps.vector import Encoded

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
# name -> (store path, machine for configs traced without machine info: what a user passes as --machine)
STORES: dict[str, tuple[Path, str | None]] = {
    "deepseek": (DATA / "ttnn_master_deepseek_v3_galaxy.json", None),
    "add_sweep": (DATA / "ttnn_master_add_sweep_head.json", None),
    "mini": (DATA / "ttnn_operations_master_mini.json", "n150"),
    "tracer_examples": (DATA / "operation_tracer_examples", "n150"),
    "sample": (ROOT / "sweeps" / "data" / "sample_master.json", None),
    "model_traced_extra": (DATA / "ttnn_master_model_traced_extra.json", None),  # tt-metal's other modules' ops
    "old_dialect": (DATA / "ttnn_old_master_fragments.json", "n150"),  # the masters in it: ttnn::pad
}
BLOCK_FLOATS = ("BFLOAT8_B", "BFLOAT4_B")
WORKERS = 2  # executors at once: the 2 cores CI has
SHARD = 40  # a machine gets a second executor when it has at least twice this many vectors
# The NOT_RUN reasons that tell the truth about a config: an argument the trace does not hold.
_UNTRACED = re.compile(r"^argument .+ (could not be read from the trace|was not traced)$")
# Messages of our own failures as the executor books them today (FAIL_OP with a Python exception
# on the emulated path, NOT_RUN "could not prepare"); ERROR once the executor knows that status.
_OURS = ("ERROR", "could not prepare")


@dataclass(frozen=True)
class Verdict:
    store: str
    op: str
    machine: str
    vector: str
    status: str
    message: str = ""
    threshold_dtype: str | None = None
    pcc: float | None = None


def store_path(name: str, workdir: Path) -> Path:
    """The store file of a corpus entry. A trace directory, or the master stores in the old-dialect
    fragments file, are imported into a store first, as `sweepctl store import` does."""
    path, _ = STORES[name]
    if path.is_dir():
        inputs = [str(path)]
    elif name == "old_dialect":
        fragments = json.loads(path.read_text(encoding="utf-8"))
        inputs = []
        for key, doc in fragments.items():
            if isinstance(doc, dict) and "operations" in doc:
                inputs.append(str(workdir / f"{key}.json"))
                Path(inputs[-1]).write_text(json.dumps(doc), encoding="utf-8")
    else:
        return path
    from tracer.store import MasterStore, read_inputs

    store = MasterStore()
    store.merge(read_inputs(inputs))
    out = workdir / f"{name}.json"
    store.save(str(out))
    return out


def expand_store(name: str, workdir: Path) -> list[tuple[Encoded, str | None, dict]]:
    """(vector, NOT_RUN reason or None, decoded vector) for every config of a store, on its traced
    machine, or the store's fallback machine for configs traced without one."""
    path = store_path(name, workdir)
    _, fallback = STORES[name]
    index = load_index(str(path))
    traced = expand(index, Selection())
    out = [(v, traced.not_run.get(v.id), v.decoded()) for v in traced.vectors]
    if fallback is not None:  # configs no profile matches are expanded again on the fallback machine
        unrouted = {d["config_hash"] for _, reason, d in out if reason and reason.startswith("traced on")}
        again = expand(index, Selection(machine=fallback)) if unrouted else None
        if again is not None:
            out = [item for item in out if item[2]["config_hash"] not in unrouted]
            redone = [(v, v.decoded()) for v in again.vectors]
            out += [(v, again.not_run.get(v.id), d) for v, d in redone if d["config_hash"] in unrouted]
    return out


def host_invalid(vectors: list[dict]) -> dict[str, str]:
    """INVALID reasons by vector id: each distinct tensor checked once per machine with ttnn's host
    checks (sweeps.validate), the first failing tensor naming the vector's reason, as enqueue does."""
    from sweeps.vector import tensor_slots

    wanted: dict[str, dict[str, None]] = {}
    for vector in vectors:
        for _, tensor in tensor_slots(vector):
            wanted.setdefault(vector["machine"], {})[_key(tensor)] = None
    reasons: dict[tuple[str, str], str | None] = {}

    def check(machine: str) -> None:
        keys = list(wanted[machine])
        for key, reason in zip(keys, validate_tensors([orjson.loads(k) for k in keys], machine), strict=True):
            reasons[machine, key] = reason

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(check, wanted))
    invalid: dict[str, str] = {}
    for vector in vectors:
        for slot, tensor in tensor_slots(vector):
            reason = reasons[vector["machine"], _key(tensor)]
            if reason:
                invalid[vector["id"]] = f"input {slot}: {reason}"
                break
    return invalid


def _key(tensor: dict) -> str:
    from sweeps.validate import tensor_key

    return tensor_key(tensor)


def _elements(vector: dict) -> int:
    from sweeps.vector import tensor_slots

    return sum(math.prod(t["shape"]) for _, t in tensor_slots(vector) if isinstance(t["shape"], list))


def run_on_executors(vectors: list[tuple[Encoded, dict]], log: bool = False, workers: int = WORKERS) -> dict[str, dict]:
    """Outcome by vector id. Each machine's vectors are dealt, largest first, to up to `workers`
    emulated executors of that machine (the executor process a worker daemon spawns, with its
    machine's mock cluster), `workers` of them running at once. `log`: their stderr to ours."""
    from workers.executor import Executor, ExecutorDied

    by_machine: dict[str, list[tuple[Encoded, dict]]] = {}
    for encoded, vector in sorted(vectors, key=lambda item: -_elements(item[1])):
        by_machine.setdefault(vector["machine"], []).append((encoded, vector))
    jobs = []
    for machine, items in by_machine.items():
        shards = min(workers, max(1, len(items) // SHARD))
        jobs += [(machine, items[n::shards]) for n in range(shards)]
    jobs.sort(key=lambda job: -sum(_elements(v) for _, v in job[1]))
    outcomes: dict[str, dict] = {}

    def run(job: tuple[str, list[tuple[Encoded, dict]]]) -> None:
        machine, items = job
        with tempfile.TemporaryFile() as stderr:  # what an executor that would not start said
            executor = Executor(machine, "emulated", [], log=sys.stderr.buffer if log else stderr)
            try:
                for encoded, vector in items:
                    outcomes[encoded.id] = executor.run(encoded.payload, vector["timeout"])
            except ExecutorDied as exc:
                stderr.seek(0)
                said = stderr.read().decode(errors="replace").splitlines()
                raise ExecutorDied(f"{exc.description}; its stderr ended: {said[-15:]}") from exc
            finally:
                executor.stop()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(run, jobs))
    return outcomes


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    """A scratch directory for imported stores, holding the index cache too unless one is set."""
    with tempfile.TemporaryDirectory(prefix="sweepctl-corpus-") as tmp:
        if os.environ.get("SWEEPCTL_CACHE_DIR"):
            yield Path(tmp)
            return
        os.environ["SWEEPCTL_CACHE_DIR"] = os.path.join(tmp, "cache")
        try:
            yield Path(tmp)
        finally:
            del os.environ["SWEEPCTL_CACHE_DIR"]


def judge(names: list[str] | None = None, log: bool = False) -> list[Verdict]:
    """Every vector of the named stores (default: all) with its verdict."""
    names = names or list(STORES)
    with _workdir() as tmp:
        expanded = {name: expand_store(name, tmp) for name in names}
    runnable = {v.id: (v, d) for items in expanded.values() for v, reason, d in items if reason is None}
    invalid = host_invalid([d for _, d in runnable.values()])
    outcomes = run_on_executors([item for vid, item in runnable.items() if vid not in invalid], log)
    verdicts = []
    for name, items in expanded.items():
        for encoded, reason, vector in items:
            common = (name, vector["op"], vector["machine"], encoded.id)
            if reason is not None:
                verdicts.append(Verdict(*common, status.NOT_RUN, reason))
            elif encoded.id in invalid:
                verdicts.append(Verdict(*common, status.INVALID, invalid[encoded.id]))
            else:
                o = outcomes[encoded.id]
                verdicts.append(Verdict(*common, o["status"], o.get("message") or "", o.get("threshold_dtype"),
                                        o.get("pcc")))  # fmt: skip
    return verdicts


def problem(v: Verdict) -> str | None:
    """Why a verdict is not the truth about the op (None: it is)."""
    if v.status == status.PASS:
        return None
    if v.status == status.INVALID:
        return None
    if v.status == status.FAIL_ACCURACY:
        if v.threshold_dtype and v.threshold_dtype.split()[-1] in BLOCK_FLOATS:
            return None
        return f"accuracy failure that is not block-float rounding ({v.threshold_dtype}): {v.message}"
    if v.status == status.NOT_RUN and _UNTRACED.match(v.message):
        return None
    if v.status == status.NOT_RUN and "no sweep definition" in v.message:
        return v.message
    if v.status in _OURS or any(m in v.message for m in _OURS):
        return f"error of ours: {v.message}"
    return f"{v.status}: {v.message}"  # on the emulated path the golden stands in for the op: ours too


def problems(verdicts: list[Verdict]) -> list[str]:
    return [f"{v.store} {v.op} {v.vector[:12]}: {p}" for v in verdicts if (p := problem(v)) is not None]


def table(verdicts: list[Verdict]) -> str:
    """Per store and op, the count of each status."""
    counts: dict[tuple[str, str], Counter] = {}
    for v in verdicts:
        counts.setdefault((v.store, v.op), Counter())[v.status] += 1
    shown = [s for s in status.ALL if any(c[s] for c in counts.values())]
    width = max((len(op) for _, op in counts), default=2) + 2
    lines = []
    for store in dict.fromkeys(s for s, _ in counts):
        lines.append(f"\n{store}")
        lines.append(f"  {'op':<{width}}" + "".join(f"{s:>15}" for s in shown))
        total = Counter()
        for (name, op), c in sorted(counts.items()):
            if name == store:
                total.update(c)
                lines.append(f"  {op:<{width}}" + "".join(f"{c[s] or '':>15}" for s in shown))
        lines.append(f"  {'total':<{width}}" + "".join(f"{total[s] or '':>15}" for s in shown))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("stores", nargs="*", help=f"default: every store ({', '.join(STORES)})")
    parser.add_argument("-v", "--verbose", action="store_true", help="also list every problem")
    parser.add_argument("--log", action="store_true", help="the executors' stderr (ttnn's log) to ours")
    args = parser.parse_args(argv)
    unknown = [name for name in args.stores if name not in STORES]
    if unknown:
        parser.error(f"unknown store {', '.join(unknown)} (known: {', '.join(STORES)})")
    verdicts = judge(args.stores or None, args.log)
    print(table(verdicts))
    found = problems(verdicts)
    print(f"\n{len(verdicts)} vectors, {len(found)} problems")
    if args.verbose:
        print("\n".join(found))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
