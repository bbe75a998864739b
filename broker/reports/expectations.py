"""Expectations: a checked-in YAML file saying what each op, config or model is expected to do.

    schema: 1
    entries:
      - op: ttnn.typecast                  # or config_hash: <hash>, or model: <org/name>
        status: known_failure              # expected_passing | known_failure | not_supported | exclude
        reason: bfloat4_b round trip loses precision
        link: https://github.com/tenstorrent/tt-metal/issues/NNNNN
        pcc: 0.95                          # optional: the PCC this op must reach to count as passing
        machines:                          # optional per-machine overrides of any field above
          galaxy: {status: expected_passing}

The most specific entry wins: config_hash, then model, then op; a vector with no entry is
expected to pass. Judged against a run, an executed vector becomes PASS, FAIL (unexpected),
XFAIL (failed as expected), XPASS (passed though expected to fail: promote it) or EXCLUDED;
vectors that never executed keep their status and are never judged.

ERROR (sweepctl's own failure) is never judged, not even by an `exclude`: no entry about an op,
a config or a model can make it XFAIL or EXCLUDED, because it says nothing about the op. It stays
ERROR in every export, and the report exits 1 on it whatever the expectations say.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from broker.reports.rows import Row
from sweeps import catalogue, status
from sweeps.profiles import PROFILES
from tracer.errors import InputError

SCHEMA = 1
EXPECTED_PASSING, KNOWN_FAILURE = "expected_passing", "known_failure"
NOT_SUPPORTED, EXCLUDE = "not_supported", "exclude"
STATUSES = (EXPECTED_PASSING, KNOWN_FAILURE, NOT_SUPPORTED, EXCLUDE)
SELECTORS = ("config_hash", "model", "op")  # most specific first
FIELDS = ("status", "reason", "link", "pcc")
XFAIL, XPASS, FAIL, EXCLUDED = "XFAIL", "XPASS", "FAIL", "EXCLUDED"


@dataclass(frozen=True)
class Expectation:
    selector: str  # config_hash, model or op
    value: str
    status: str
    line: int
    reason: str = ""
    link: str = ""
    pcc: float | None = None
    machines: dict[str, Expectation] = field(default_factory=dict)

    def on(self, machine: str) -> Expectation:
        return self.machines.get(machine, self)

    @property
    def where(self) -> str:
        return f"{self.selector} {self.value} (line {self.line})"


class _Loader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping, for errors that say where, and refuses
    a key given twice in one mapping (PyYAML keeps the last one silently)."""


def _mapping_with_line(loader: _Loader, node: yaml.MappingNode) -> dict[str, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (str, int, float, bool)):
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    problem=f"duplicate key {key!r} (first given at line {seen[key]})", problem_mark=key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__line__"] = node.start_mark.line + 1
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)


@dataclass
class Expectations:
    path: str
    entries: list[Expectation]

    def __post_init__(self) -> None:
        self._index = {(e.selector, e.value): e for e in self.entries}

    def for_row(self, row: Row) -> Expectation | None:
        vector = row.vector
        found = self._index.get(("config_hash", vector.get("config_hash") or ""))
        if found is None:
            found = next((self._index[("model", m)] for m in row.models if ("model", m) in self._index), None)
        if found is None:
            found = self._index.get(("op", vector["op"]))
        return found.on(vector["machine"]) if found else None

    def judge(self, row: Row) -> tuple[str, Expectation | None]:
        """The row's verdict under these expectations, and the entry that decided it."""
        expectation = self.for_row(row)
        if row.status == status.ERROR:  # sweepctl's bug: nothing an expectation says about the op applies
            return row.status, expectation
        if expectation is not None and expectation.status == EXCLUDE:
            return EXCLUDED, expectation
        if not status.is_executed(row.status):
            return row.status, expectation
        passed = row.status == status.PASS
        if passed and expectation is not None and expectation.pcc is not None:
            passed = row.pcc is not None and row.pcc >= expectation.pcc
        expected_pass = expectation is None or expectation.status == EXPECTED_PASSING
        if expected_pass:
            return (status.PASS if passed else FAIL), expectation
        return (XPASS if passed else XFAIL), expectation


def _fail(path: str, line: int | None, message: str) -> InputError:
    return InputError(f"{path}:{line}" if line else path, message)


def _entry(path: str, raw: Any, number: int, machine: str | None = None) -> Expectation:
    if not isinstance(raw, dict):
        raise _fail(path, None, f"entry {number} is not a mapping")
    line = raw.get("__line__")
    data = {k: v for k, v in raw.items() if k != "__line__"}
    allowed = set(FIELDS) | ({"machines"} | set(SELECTORS) if machine is None else set())
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _fail(path, line, f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    selector, value = "machine", machine or ""
    if machine is None:
        chosen = [s for s in SELECTORS if s in data]
        if len(chosen) != 1:
            raise _fail(path, line, "an entry names exactly one of op, config_hash or model")
        selector, value = chosen[0], data[chosen[0]]
        if not isinstance(value, str) or not value:
            raise _fail(path, line, f"{selector} must be a non-empty string")
    state = data.get("status")
    if state not in STATUSES:
        raise _fail(path, line, f"status {state!r} is not one of {', '.join(STATUSES)}")
    if state == KNOWN_FAILURE and not (data.get("reason") and data.get("link")):
        raise _fail(path, line, "a known_failure needs a reason and a tracking link")
    pcc = data.get("pcc")
    if pcc is not None and not (isinstance(pcc, (int, float)) and not isinstance(pcc, bool) and 0 < pcc <= 1):
        raise _fail(path, line, f"pcc must be a number in (0, 1], not {pcc!r}")
    entry = Expectation(
        selector, value, state, line or 0, str(data.get("reason") or ""), str(data.get("link") or ""),
        float(pcc) if pcc is not None else None,
    )  # fmt: skip
    overrides = data.get("machines") or {}
    if not isinstance(overrides, dict):
        raise _fail(path, line, "machines must map a machine name to overrides")
    machines = {}
    for name, fields in overrides.items():
        if name == "__line__":
            continue
        if not isinstance(fields, dict):
            raise _fail(path, line, f"machines.{name} must be a mapping of overrides")
        merged = {**{k: getattr(entry, k) for k in FIELDS if getattr(entry, k) not in ("", None)}, **fields}
        machines[str(name)] = replace(_entry(path, merged, number, machine=str(name)), selector=selector, value=value)
    return replace(entry, machines=machines)


def load(path: str) -> Expectations:
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.load(handle, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except OSError as exc:
        raise InputError(path, exc.strerror or str(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise _fail(path, mark.line + 1 if mark else None, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise _fail(path, None, "expected a mapping with `schema: 1` and a list of `entries`")
    if data.get("schema") != SCHEMA:
        raise _fail(path, data.get("__line__"), f"schema {data.get('schema')!r} is not {SCHEMA}")
    entries = [_entry(path, raw, i + 1) for i, raw in enumerate(data["entries"])]
    seen: dict[tuple[str, str], Expectation] = {}
    for entry in entries:
        earlier = seen.setdefault((entry.selector, entry.value), entry)
        if earlier is not entry:
            raise _fail(path, entry.line, f"{entry.selector} {entry.value} is already given at line {earlier.line}")
    return Expectations(path, entries)


def check(expectations: Expectations, store: Any | None) -> list[str]:
    """Problems that make an entry match nothing: unknown ops, stale config hashes, unknown models
    and machines. Ops are checked against the catalogue and the store; hashes and models need a store."""
    problems = []
    hashes = {entry["config_hash"] for _, entry in store.entries()} if store is not None else None
    models = store.models() if store is not None else None
    ops = set(store.ops) if store is not None else set()
    for entry in expectations.entries:
        where = f"{expectations.path}:{entry.line}"
        if entry.selector == "op" and catalogue.lookup(entry.value) is None and entry.value not in ops:
            problems.append(f"{where}: unknown op {entry.value} (not in the catalogue nor the store)")
        if entry.selector == "config_hash" and hashes is not None and entry.value not in hashes:
            problems.append(f"{where}: stale config_hash {entry.value}: no config of the store has it")
        if entry.selector == "model" and models is not None and entry.value not in models:
            problems.append(f"{where}: model {entry.value} traced nothing in the store")
        for machine in entry.machines:
            if machine not in PROFILES:
                problems.append(f"{where}: unknown machine {machine} (known: {', '.join(PROFILES)})")
    return problems


def judge_rows(expectations: Expectations, rows: list[Row]) -> dict[str, Any]:
    """Verdict counts per op, the unexpected failures, and the XPASS entries to promote."""
    per_op: dict[str, Counter] = {}
    failures, promote = [], {}
    for row in rows:
        verdict, entry = expectations.judge(row)
        per_op.setdefault(row.vector["op"], Counter())[verdict] += 1
        if verdict == FAIL:
            failures.append(_row_brief(row, entry))
        elif verdict == XPASS and entry is not None:
            item = promote.setdefault(entry.where, {"entry": entry.where, "status": entry.status, "vectors": 0})
            item["vectors"] += 1
    totals = sum(per_op.values(), Counter())
    return {
        "expectations": expectations.path,
        "counts": dict(sorted(totals.items())),
        "per_op": {op: dict(sorted(c.items())) for op, c in sorted(per_op.items())},
        "unexpected_failures": failures,
        "xpass_to_promote": sorted(promote.values(), key=lambda item: item["entry"]),
        "regressed": bool(failures),
    }


def _row_brief(row: Row, entry: Expectation | None) -> dict[str, Any]:
    message = row.record.get("message", "")
    if entry is not None and entry.pcc is not None and row.status == status.PASS:
        message = f"PCC {row.pcc} below the {entry.pcc} the expectations require ({entry.where})"
    return {
        "vector": row.id,
        "op": row.vector["op"],
        "machine": row.vector["machine"],
        "config_hash": row.vector.get("config_hash"),
        "status": row.status,
        "pcc": row.pcc,
        "message": message,
    }
