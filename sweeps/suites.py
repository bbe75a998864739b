"""Suites: which vectors a selection of the master store becomes.

* `model_traced`: every traced config of the op, exactly; configs whose canonical inputs are
  identical on one machine collapse to one vector that keeps every source.
* `all_cases`: per op and machine, the Cartesian product of the values observed in each argument
  slot ("not passed" counts as a value of a slot some configs omit); `count_all_cases` gives the
  exact number of vectors without building them (an absent positional ends the argument list, so
  the combinations that differ only after it are one call), and a selection over the cap is
  refused until the cap is raised explicitly (`--dry-run` lifts it, up to DRY_RUN_CEILING).
* `nightly`: hand-written grids per op (sweeps/nightly.py).

Every config becomes a vector: one that cannot run gets a NOT_RUN reason (no sweep definition,
an argument the trace could not read or did not record, no machine profile) instead of being
dropped.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import orjson

from sweeps import catalogue, configobjects
from sweeps.index import MODEL_TRACED, Index, TracedConfig, unreadable
from sweeps.meshplan import open_key
from sweeps.profiles import Routing, get_profile
from sweeps.validate import TensorTable
from sweeps.vector import Encoded, assemble, tensor_keys
from tracer.errors import InputError
from tracer.store import bulk, model_of

SUITES = ("model_traced", "all_cases", "nightly")
DEFAULT_ALL_CASES_CAP = 10_000
DRY_RUN_CEILING = 1_000_000  # a dry run expands and validates what it counts: ~20 s and ~1.3 GB at this size


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
    vectors: list[Encoded] = field(default_factory=list)
    not_run: dict[str, str] = field(default_factory=dict)  # vector id -> reason
    tensors: TensorTable = field(default_factory=TensorTable)  # what Encoded.tensors point into

    @classmethod
    def of(cls, vectors: list[dict[str, Any]]) -> Expansion:
        """Vectors made by hand (make_vector: tests, benchmarks, tools), every one runnable."""
        expansion = cls()
        expansion.vectors = [Encoded.of(v, expansion.tensors) for v in vectors]
        return expansion

    def add(self, vector: Encoded, reason: str | None) -> None:
        self.vectors.append(vector)
        if reason is not None:
            self.not_run[vector.id] = reason

    def decoded(self) -> list[dict[str, Any]]:
        """The vectors as maps (dry runs, tests): decoded from their wire bytes, the bytes that ship."""
        return [v.decoded() for v in self.vectors]


def _configs(index: Index, selection: Selection) -> Iterator[tuple[TracedConfig, Routing]]:
    """The selected configs with where they run: their traced routing, or `--machine`'s."""
    override = get_profile(selection.machine) if selection.machine else None
    overridden: dict[int, Routing] = {}  # id(traced routing) -> with the override's profile and mesh
    model, substring = selection.model, selection.substring
    for op in selection.ops if selection.ops is not None else index.ops():
        for traced in index.configs(op):
            if model and not any(model in model_of(s) for s in traced.sources):
                continue
            if substring and not any(substring in text for text in (op, traced.config_hash, *traced.sources)):
                continue
            route = traced.routing
            if override is not None:
                found = overridden.get(id(route))
                if found is None:
                    found = overridden[id(route)] = Routing(override, route.traced_on, override.mesh_shape)
                route = found
            yield traced, route


def not_run_reason(op: str, route: Routing, untraced: str | None) -> str | None:
    """Why a config can never run (None: it can). `untraced`: which argument the trace could not
    read or did not record (sweeps.index.untraced)."""
    if catalogue.lookup(op) is None:
        return catalogue.no_definition_reason(op)
    if route.profile is None:
        return f"traced on {route.traced_on}: no machine profile matches (choose one with --machine)"
    return route.profile.mesh_misfit(route.mesh_shape) or untraced


def _assemble(t: TracedConfig, route: Routing, config_hash: str, sources: list[str]) -> tuple[str, bytes]:
    inputs, kwargs = t.packed_args()
    timeout = catalogue.timeout_for(t.op, route.profile)
    vid, wire, _ = assemble(t.op, MODEL_TRACED, route.machine, route.mesh_shape, inputs, kwargs, timeout,
                            config_hash, sources, t.traced_bin)  # fmt: skip
    return vid, wire


def model_traced(index: Index, selection: Selection) -> Expansion:
    """Each config's vector comes assembled from the index when it runs where it was traced; under
    `--machine` it is joined from the index's packed pieces (sweeps.vector.assemble). Nothing is
    decoded either way."""
    expansion = Expansion(tensors=index.tensors)
    firsts: dict[str, tuple[TracedConfig, Routing, int]] = {}  # vector id -> its first config, position
    twins: dict[str, list[TracedConfig]] = {}
    reasons: dict[tuple[str, int], str | None] = {}  # (op, id(routing)) -> NOT_RUN reason
    opens: dict[Any, Any] = {}  # ((op, id(routing)), reach) -> the mesh it opens
    for t, route in _configs(index, selection):
        if route is t.routing:
            vid, wire = t.vid, t.wire
        else:
            vid, wire = _assemble(t, route, t.config_hash, t.sources)
        if vid in firsts:
            twins.setdefault(vid, [firsts[vid][0]]).append(t)
            continue
        firsts[vid] = (t, route, len(expansion.vectors))
        key = (t.op, id(route))
        if key not in reasons:
            reasons[key] = not_run_reason(t.op, route, None)
        reason = reasons[key] or t.untraced
        mesh = (key, t.reach)
        opened = opens.get(mesh, opens)
        if opened is opens:
            opened = opens[mesh] = open_key(route.profile, route.mesh_shape, t.op, t.reach[:2], t.reach[2])
        expansion.add(Encoded(vid, t.op, route.machine, t.config_hash, wire, t.tensors, opened), reason)
    for vid, configs in twins.items():  # same inputs traced twice (e.g. two dialect spellings): one vector
        first, route, position = firsts[vid]
        config_hash = min(c.config_hash for c in configs)
        sources = sorted({s for c in configs for s in c.sources})
        _, wire = _assemble(first, route, config_hash, sources)
        opened = expansion.vectors[position].opens
        expansion.vectors[position] = Encoded(vid, first.op, route.machine, config_hash, wire, first.tensors, opened)
    return expansion


_ABSENT = object()  # a slot some configs do not pass: "not passed" is one of its observed values


def _slot_values(configs: list[tuple[TracedConfig, Routing]]) -> dict[str, list[Any]]:
    """Observed distinct values per argument slot ("0", "1"… and kwarg names), in first-seen order."""
    slots: dict[str, dict[bytes, Any]] = {}
    seen_in: dict[str, int] = {}
    for traced, _ in configs:
        canonical = traced.canonical
        items = [(str(i), v) for i, v in enumerate(canonical["args"])] + list(canonical["kwargs"].items())
        for slot, value in items:
            slots.setdefault(slot, {}).setdefault(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), value)
            seen_in[slot] = seen_in.get(slot, 0) + 1
    out = {slot: list(values.values()) for slot, values in slots.items()}
    for slot, values in out.items():
        if seen_in[slot] < len(configs):
            values.append(_ABSENT)
    return out


def _groups(index: Index, selection: Selection) -> dict[tuple[str, str], list[tuple[TracedConfig, Routing]]]:
    groups: dict[tuple[str, str], list[tuple[TracedConfig, Routing]]] = {}
    for traced, route in _configs(index, selection):
        groups.setdefault((traced.op, route.machine), []).append((traced, route))
    return groups


def _distinct_calls(slots: dict[str, list[Any]]) -> int:
    """How many distinct calls (vectors) the product of a group's slot values makes: an absent
    positional ends the argument list, so every combination of the positionals after it is the
    same call (all_cases keeps one)."""
    calls, before = 0, 1  # calls whose argument list ends at an absent slot; combinations before it
    for slot in sorted((s for s in slots if s.isdigit()), key=int):
        present = sum(1 for v in slots[slot] if v is not _ABSENT)
        if present < len(slots[slot]):
            calls += before
        before *= present
    return (calls + before) * math.prod(len(v) for s, v in slots.items() if not s.isdigit())


def count_all_cases(index: Index, selection: Selection) -> dict[tuple[str, str], int]:
    """Vectors per (op, machine) that all_cases makes of the selection: exact, nothing built."""
    return {key: _distinct_calls(_slot_values(cfgs)) for key, cfgs in _groups(index, selection).items()}


def _over_cap(counts: dict[tuple[str, str], int], cap: int) -> InputError:
    total = sum(counts.values())
    biggest = max(counts, key=counts.get)
    preview = " (see what would be queued first with --dry-run)" if total <= DRY_RUN_CEILING else ""
    return InputError(
        "--suite all_cases",
        f"{total:,} vectors (largest: {biggest[0]} on {biggest[1]}, {counts[biggest]:,}) exceed the cap of "
        f"{cap:,}; raise it with --max-vectors {total}{preview}",
    )


def all_cases(index: Index, selection: Selection) -> Expansion:
    groups = _groups(index, selection)
    slots_of = {key: _slot_values(cfgs) for key, cfgs in groups.items()}
    counts = {key: _distinct_calls(slots) for key, slots in slots_of.items()}
    if sum(counts.values()) > selection.cap:
        raise _over_cap(counts, selection.cap)
    expansion = Expansion()
    packer = msgpack.Packer(use_bin_type=True)
    for (op, machine), cfgs in groups.items():
        slots = slots_of[(op, machine)]
        positional = sorted((s for s in slots if s.isdigit()), key=int)
        named = [s for s in slots if not s.isdigit()]
        route = cfgs[0][1]
        opdef = catalogue.lookup(op)
        sources = sorted({s for t, _ in cfgs for s in t.sources})
        timeout = catalogue.timeout_for(op, route.profile)
        base = not_run_reason(op, route, None)  # the group's: op, profile, mesh
        # every observed value of a slot packed once: a vector is joined from its values' bytes, as
        # model_traced's are (sweeps.vector.assemble), and equals make_vector's (tested)
        pieces = {slot: [_piece(slot, v, expansion.tensors, packer) for v in slots[slot]] for slot in slots}
        by_name = sorted(range(len(named)), key=named.__getitem__)  # kwargs are packed in name order
        names = [packer.pack(name) for name in named]
        firsts = [pieces[s][0] for s in positional]
        for combo in itertools.product(*(pieces[s] for s in positional), *(pieces[s] for s in named)):
            args = list(itertools.takewhile(lambda p: p is not None, combo[: len(positional)]))
            if any(combo[j] is not firsts[j] for j in range(len(args) + 1, len(positional))):
                continue  # an absent positional ends the args: the same call as with the rest at their first values
            kw = combo[len(positional) :]
            present = [i for i in by_name if kw[i] is not None]
            inputs = packer.pack_array_header(len(args)) + b"".join(p.packed for p in args)
            kwargs = packer.pack_map_header(len(present)) + b"".join(names[i] + kw[i].packed for i in present)
            vid, wire, _ = assemble(op, "all_cases", route.machine, route.mesh_shape, inputs, kwargs, timeout, None,
                                    sources)  # fmt: skip
            flat = tuple(x for p in (*args, *(kw[i] for i in present)) for x in p.tensors)
            reason = base or _untraced(opdef, args, kw, named, present)
            expansion.add(Encoded(vid, op, route.machine, None, wire, flat), reason)
    return expansion


def _untraced(opdef: catalogue.OpDef | None, args: list[_Piece], kw: tuple[_Piece | None, ...], named: list[str],
              present: list[int]) -> str | None:  # fmt: skip
    """sweeps.index.untraced of one combination, from its pieces (nothing decoded)."""
    unread = next((str(i) for i, p in enumerate(args) if p.unreadable), None) or next(
        (named[i] for i, p in enumerate(kw) if p is not None and p.unreadable), None
    )
    if unread is not None:
        return f"argument {unread} could not be read from the trace"
    unbuildable = next((p.unknown_object for p in (*args, *kw) if p is not None and p.unknown_object), None)
    if unbuildable is not None:
        return unbuildable
    missing = opdef.missing(len(args), {named[i] for i in present}) if opdef is not None else None
    return f"argument {missing} was not traced" if missing is not None else None


@dataclass(slots=True)
class _Piece:
    """One observed value of an argument slot, packed, with its tensors (flat [slot, table
    position, ...]), whether it holds something the trace could not read, and why it is a config
    object sweepctl cannot build (sweeps.configobjects), if it is one."""

    packed: bytes
    tensors: tuple[Any, ...]
    unreadable: bool
    unknown_object: str | None


def _piece(slot: str, value: Any, table: TensorTable, packer: msgpack.Packer) -> _Piece | None:
    if value is _ABSENT:
        return None
    tensors = table.flat(tensor_keys({"inputs": [], "kwargs": {slot: value}}))
    return _Piece(packer.pack(value), tensors, unreadable(value), configobjects.unknown([], {slot: value}))


def expand(index: Index, selection: Selection) -> Expansion:
    """The selection's vectors; built with the cyclic GC paused, as the store builds its graph."""
    with bulk():
        if selection.suite == "model_traced":
            return model_traced(index, selection)
        if selection.suite == "all_cases":
            return all_cases(index, selection)
        if selection.suite == "nightly":
            from sweeps.nightly import nightly

            return nightly(selection)
    raise InputError("--suite", f"unknown suite {selection.suite!r} (known: {', '.join(SUITES)})")
