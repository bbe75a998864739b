"""Suites: which vectors a selection of the master store becomes.

* `model_traced`: every traced config of the op, exactly; configs whose canonical inputs are
  identical on one machine collapse to one vector that keeps every source.
* `all_cases`: per op and machine, the Cartesian product of the values observed in each argument
  slot ("not passed" counts as a value of a slot some configs omit); `count_all_cases` previews
  the size (an upper bound), and a product over the cap is refused until the cap
  is raised explicitly.
* `nightly`: hand-written grids per op (sweeps/nightly.py).

Every config becomes a vector: one that cannot run gets a NOT_RUN reason (no sweep definition,
an argument the trace could not read, no machine profile) instead of being dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from sweeps import catalogue
from sweeps.profiles import MachineProfile, get_profile, route
from sweeps.vector import make_vector
from tracer.args import canonical_arguments, count_unparsed
from tracer.errors import InputError
from tracer.store import MasterStore, bulk, model_of

SUITES = ("model_traced", "all_cases", "nightly")
DEFAULT_ALL_CASES_CAP = 10_000
UNKNOWN_MACHINE = "unknown"


@dataclass
class Selection:
    """What `sweepctl enqueue` asked for."""

    ops: list[str] | None = None  # canonical names; None = every op in the store
    suite: str = "model_traced"
    machine: str | None = None  # override the traced machine
    model: str | None = None  # substring of the model name / source
    substring: str | None = None  # -k: substring of op name, config hash or source
    cap: int = DEFAULT_ALL_CASES_CAP

    def as_dict(self) -> dict[str, Any]:
        return {
            "ops": self.ops,
            "suite": self.suite,
            "machine": self.machine,
            "model": self.model,
            "k": self.substring,
            "cap": self.cap,
        }


@dataclass
class Expansion:
    vectors: list[dict[str, Any]] = field(default_factory=list)
    not_run: dict[str, str] = field(default_factory=dict)  # vector id -> reason

    def add(self, vector: dict[str, Any], reason: str | None) -> None:
        self.vectors.append(vector)
        if reason is not None:
            self.not_run[vector["id"]] = reason


@dataclass
class _Config:
    op: str
    canonical: dict[str, Any]
    config_hash: str
    sources: list[str]
    profile: MachineProfile | None
    traced_on: str
    mesh_shape: list[int]


def _configs(store: MasterStore, selection: Selection) -> Iterator[_Config]:
    from tracer.machine import machine_label

    override = get_profile(selection.machine) if selection.machine else None
    ops = selection.ops if selection.ops is not None else sorted(store.ops)
    for op in ops:
        for _, entry in store.entries(op):
            sources = sorted({str(run.get("source")) for run in entry["executions"]})
            if selection.model and not any(selection.model in model_of(s) for s in sources):
                continue
            if selection.substring and not any(
                selection.substring in text for text in (op, entry["config_hash"], *sources)
            ):
                continue
            info = entry["executions"][0].get("machine_info")
            profile = override or route(info)
            mesh = (info or {}).get("mesh_device_shape") if override is None else None
            if profile is not None and not (isinstance(mesh, list) and len(mesh) == 2):
                mesh = list(profile.mesh_shape)
            yield _Config(
                op,
                canonical_arguments(entry["arguments"]),
                entry["config_hash"],
                sources,
                profile,
                machine_label(info),
                list(mesh or [1, 1]),
            )


def not_run_reason(op: str, canonical: dict[str, Any], profile: MachineProfile | None, traced_on: str) -> str | None:
    if catalogue.lookup(op) is None:
        return catalogue.no_definition_reason(op)
    if profile is None:
        return f"traced on {traced_on}: no machine profile matches (choose one with --machine)"
    for where, value in [*enumerate(canonical["args"]), *canonical["kwargs"].items()]:
        if not _is_tensor(value) and count_unparsed(value):
            return f"argument {where} could not be read from the trace"
    return None


def _is_tensor(value: Any) -> bool:
    return isinstance(value, dict) and "tensor" in value


def timeout_for(op: str, profile: MachineProfile | None) -> float:
    opdef = catalogue.lookup(op)
    base = opdef.timeout if opdef else catalogue.DEFAULT_TIMEOUT
    return base * (profile.timeout_scale if profile else 1.0)


def _vector(suite: str, cfg: _Config, args: list[Any], kwargs: dict[str, Any], hashes: list[str]) -> dict[str, Any]:
    return make_vector(
        cfg.op,
        suite,
        cfg.profile.name if cfg.profile else UNKNOWN_MACHINE,
        cfg.mesh_shape,
        args,
        kwargs,
        timeout_for(cfg.op, cfg.profile),
        config_hash=min(hashes) if hashes else None,
        sources=cfg.sources,
        trusted=True,
    )


def model_traced(store: MasterStore, selection: Selection) -> Expansion:
    by_id: dict[str, tuple[dict[str, Any], str | None]] = {}
    for cfg in _configs(store, selection):
        vector = _vector("model_traced", cfg, cfg.canonical["args"], cfg.canonical["kwargs"], [cfg.config_hash])
        seen = by_id.get(vector["id"])
        if seen is not None:  # same inputs traced twice (e.g. two dialect spellings): one vector, all sources
            kept = seen[0]
            kept["sources"] = sorted(set(kept["sources"]) | set(vector["sources"]))
            kept["config_hash"] = min(kept["config_hash"], vector["config_hash"])
            continue
        by_id[vector["id"]] = (vector, not_run_reason(cfg.op, cfg.canonical, cfg.profile, cfg.traced_on))
    expansion = Expansion()
    for vector, reason in by_id.values():
        expansion.add(vector, reason)
    return expansion


_ABSENT = object()  # a slot some configs do not pass: "not passed" is one of its observed values


def _slot_values(configs: list[_Config]) -> dict[str, list[Any]]:
    """Observed distinct values per argument slot ("0", "1"… and kwarg names), in first-seen order."""
    slots: dict[str, dict[bytes, Any]] = {}
    seen_in: dict[str, int] = {}
    for cfg in configs:
        items = [(str(i), v) for i, v in enumerate(cfg.canonical["args"])] + list(cfg.canonical["kwargs"].items())
        for slot, value in items:
            slots.setdefault(slot, {}).setdefault(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), value)
            seen_in[slot] = seen_in.get(slot, 0) + 1
    out = {slot: list(values.values()) for slot, values in slots.items()}
    for slot, values in out.items():
        if seen_in[slot] < len(configs):
            values.append(_ABSENT)
    return out


def _groups(store: MasterStore, selection: Selection) -> dict[tuple[str, str], list[_Config]]:
    groups: dict[tuple[str, str], list[_Config]] = {}
    for cfg in _configs(store, selection):
        groups.setdefault((cfg.op, cfg.profile.name if cfg.profile else UNKNOWN_MACHINE), []).append(cfg)
    return groups


def count_all_cases(store: MasterStore, selection: Selection) -> dict[tuple[str, str], int]:
    return {
        key: math.prod(len(v) for v in _slot_values(cfgs).values()) for key, cfgs in _groups(store, selection).items()
    }


def all_cases(store: MasterStore, selection: Selection) -> Expansion:
    import itertools

    groups = _groups(store, selection)
    counts = {key: math.prod(len(v) for v in _slot_values(cfgs).values()) for key, cfgs in groups.items()}
    total = sum(counts.values())
    if total > selection.cap:
        biggest = max(counts, key=counts.get)
        raise InputError(
            "--suite all_cases",
            f"{total:,} vectors (largest: {biggest[0]} on {biggest[1]}, {counts[biggest]:,}) exceed the cap of "
            f"{selection.cap:,}; preview with --dry-run, raise it with --max-vectors",
        )
    expansion = Expansion()
    for (op, _), cfgs in groups.items():
        slots = _slot_values(cfgs)
        positional = sorted((s for s in slots if s.isdigit()), key=int)
        named = [s for s in slots if not s.isdigit()]
        order = positional + named
        first = cfgs[0]
        sources = sorted({s for c in cfgs for s in c.sources})
        base = _Config(
            op, first.canonical, first.config_hash, sources, first.profile, first.traced_on, first.mesh_shape
        )
        seen: set[str] = set()
        for combo in itertools.product(*(slots[s] for s in order)):
            args = list(itertools.takewhile(lambda v: v is not _ABSENT, combo[: len(positional)]))
            kwargs = {k: v for k, v in zip(named, combo[len(positional) :], strict=True) if v is not _ABSENT}
            canonical = {"args": args, "kwargs": kwargs}
            vector = _vector("all_cases", base, args, kwargs, [])
            if vector["id"] in seen:  # an absent positional truncates the args: the same call twice
                continue
            seen.add(vector["id"])
            vector["sources"] = sources
            expansion.add(vector, not_run_reason(op, canonical, first.profile, first.traced_on))
    return expansion


def expand(store: MasterStore, selection: Selection) -> Expansion:
    """The selection's vectors; built with the cyclic GC paused, as the store builds its graph."""
    with bulk():
        if selection.suite == "model_traced":
            return model_traced(store, selection)
        if selection.suite == "all_cases":
            return all_cases(store, selection)
        if selection.suite == "nightly":
            from sweeps.nightly import nightly

            return nightly(selection)
    raise InputError("--suite", f"unknown suite {selection.suite!r} (known: {', '.join(SUITES)})")
