"""The fleet-tracing commands of `sweepctl`: `models list|show|check|discover|status`, `trace --model
NAME | --all` (trace jobs on the workers) and `store pull` (their results into the master store).
The parser that wires them up is in broker/cli/__init__.py."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from broker.cli.commands import _connect, _print_json
from tracer import registry as reg
from tracer.errors import InputError


def models_path(args: argparse.Namespace) -> str:
    from broker.cli import default_store

    return args.models or reg.default_path(getattr(args, "store", None) or default_store())


# --- the registry --------------------------------------------------------------------------------


def cmd_models_list(args: argparse.Namespace) -> int:
    registry = reg.load(models_path(args))
    if args.json:
        _print_json([e.as_dict() for e in registry.entries])
        return 0
    print(f"{registry.path}: {len(registry.entries)} models (root {registry.root})")
    for entry in registry.entries:
        print(f"  {entry.name:<44} {','.join(entry.machines):<16} {entry.timeout:>7g}s  {entry.test}")
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    registry = reg.load(models_path(args))
    entry = registry.get(args.name)
    if args.json:
        _print_json({**entry.as_dict(), "where": registry.where(entry), "root": registry.root_dir})
        return 0
    print(f"{entry.name}  ({registry.where(entry)})")
    print(f"  test      {entry.test}   (under {registry.root_dir})")
    print(f"  machines  {', '.join(entry.machines)}")
    print(f"  timeout   {entry.timeout:g} s")
    if entry.env:
        print("  env       " + " ".join(f"{k}={v}" for k, v in sorted(entry.env.items())))
    if entry.markers:
        print(f"  markers   {entry.markers}")
    return 0


def cmd_models_check(args: argparse.Namespace) -> int:
    """Exit 2 when the file has any problem: the registry is input, and a broken one queues nothing."""
    registry = reg.load(models_path(args))
    found = reg.check(registry, collect=not args.no_collect)
    if args.json:
        _print_json({"file": registry.path, "models": len(registry.entries), "problems": found})
    else:
        for line in found:
            print(line, file=sys.stderr)
        if not found:
            how = "" if args.no_collect else ", every test collected by pytest"
            print(f"{registry.path}: {len(registry.entries)} models, no problems{how}")
    return 2 if found else 0


def cmd_models_discover(args: argparse.Namespace) -> int:
    from sweeps.profiles import get_profile
    from tracer.store import atomic_write

    machines = [get_profile(m.strip()).name for m in args.machine.split(",") if m.strip()]
    if not machines:
        raise InputError("--machine", "name at least one machine type")
    path = models_path(args)
    registry = reg.load(path, missing_ok=True)
    if args.root:
        if os.path.exists(path):
            raise InputError("--root", f"{path} exists: its root is {registry.root!r} (edit the file to change it)")
        registry.root = args.root
    if not args.timeout > 0:
        raise InputError("--timeout", f"{args.timeout:g}: give seconds > 0")
    env = dict(_env_pair(item) for item in args.env or [])
    new, known = reg.discover(registry, args.path, machines, args.k, args.m, env, args.timeout)
    if args.write and new:
        registry.entries.extend(new)
        atomic_write(path, registry.to_yaml().encode())
    if args.json:
        _print_json({"file": path, "new": [e.as_dict() for e in new], "already_registered": known,
                     "written": bool(args.write and new)})  # fmt: skip
        return 0
    verb = "added to" if args.write else "would add to"
    print(f"{len(new)} tests {verb} {path} ({len(known)} already registered)")
    for entry in new:
        print(f"  + {entry.name}  on {','.join(entry.machines)}")
    if new and not args.write:
        print("add them with --write")
    return 0


def _env_pair(text: str) -> tuple[str, str]:
    name, eq, value = text.partition("=")
    if not eq or not name:
        raise InputError(f"--env {text}", "expected NAME=VALUE")
    return name, value


# --- parser --------------------------------------------------------------------------------------


def add_parsers(sub: Any) -> None:
    """`sweepctl models ...`."""
    models = sub.add_parser(
        "models",
        help="the model registry (models.yaml): which model tests are traced on which machine types",
        description="The model registry: a models.yaml beside the store (or --models / $SWEEPCTL_MODELS) with "
        "one entry per model: name, pytest node id or script (relative to the file's `root:`), env, machine "
        "types, timeout, markers. `sweepctl trace --model NAME | --all` queues its entries on the fleet.",
    )
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="MODELS_COMMAND")

    def command(name: str, help_text: str, func, description: str | None = None) -> argparse.ArgumentParser:
        parser = models_sub.add_parser(name, help=help_text, description=description or help_text)
        parser.add_argument("--models", help=f"registry file (default ${reg.MODELS_ENV}, else models.yaml beside "
                            "--store)")  # fmt: skip
        parser.add_argument("--store", help="master store whose directory holds models.yaml by default")
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.set_defaults(func=func)
        return parser

    command("list", "every registered model: machines, timeout, test", cmd_models_list)
    show = command("show", "one model's entry", cmd_models_show)
    show.add_argument("name", help="the model's name as registered")
    check = command(
        "check",
        "check the registry: unknown machine types, duplicate names, tests pytest cannot collect; one line "
        "each (file:line) on stderr, exit 2 when any",
        cmd_models_check,
        "Check every entry of the registry. Collection runs pytest --collect-only in a child process (cwd and "
        "rootdir = the registry's root, the entry's env, its first machine's mock cluster when there is no "
        "tt-smi); model code is never imported by sweepctl itself.",
    )
    check.add_argument("--no-collect", action="store_true", help="skip pytest's collection (machines and names only)")
    discover = command(
        "discover",
        "propose registry entries for the tests pytest collects under PATH (-k, -m as pytest's)",
        cmd_models_discover,
        "Collect PATH with pytest's own collection (--collect-only -q, in a child process; model code is never "
        "imported by sweepctl) and print the entries it would add, one per collected node id, named after it. "
        "Node ids already registered are skipped. --write adds them to the registry (the file is rewritten "
        "as YAML: its comments are not kept).",
    )
    status = command(
        "status",
        "per model and machine type: last trace (when, ttnn version, outcome), configs it added (new/known), "
        "whether a sweep run since covered the model's configs on that machine",
        cmd_models_status,
    )
    status.add_argument("--redis", help="Redis URL (default $SWEEPCTL_REDIS_URL, else the embedded Redis of `up`)")
    status.add_argument("--prefix", help="key prefix (default $SWEEPCTL_PREFIX or sweepctl)")
    discover.add_argument("path", help="test file or directory, under the registry's root")
    discover.add_argument("--machine", required=True, help="machine types the new entries trace on: n300[,t3k]")
    discover.add_argument("-k", help="pytest -k expression")
    discover.add_argument("-m", help="pytest -m marker expression (also kept as the entries' markers)")
    discover.add_argument("--env", action="append", metavar="NAME=VALUE", help="env of the new entries (repeat)")
    discover.add_argument("--timeout", type=float, default=reg.DEFAULT_TIMEOUT, help="s (default: %(default)g)")
    discover.add_argument("--root", help="root of a new registry file (default: its directory)")
    discover.add_argument("--write", action="store_true", help="add the proposed entries to the registry")


# --- trace jobs on the fleet ---------------------------------------------------------------------


def _selected(args: argparse.Namespace, registry: reg.Registry) -> list[tuple[reg.ModelEntry, str]]:
    """(entry, machine) pairs `--model NAME | --all [--machine M]` asks for; bad input raises."""
    from sweeps.profiles import get_profile

    machine = get_profile(args.machine).name if args.machine else None
    entries = [registry.get(args.model)] if args.model else list(registry.entries)
    if not entries:
        raise InputError(registry.path, "no models registered (add entries, or `sweepctl models discover`)")
    bad = [line for line in reg.problems(registry) if any(f"model {e.name!r}" in line for e in entries)]
    if bad:
        where, _, what = bad[0].rpartition(": model ")
        raise InputError(where, f"model {what}")
    if args.model and machine and machine not in entries[0].machines:
        on = ", ".join(entries[0].machines)
        raise InputError(f"--machine {machine}", f"model {args.model!r} traces on {on} only")
    pairs = [(e, m) for e in entries for m in e.machines if machine in (None, m)]
    if not pairs:
        raise InputError(f"--machine {machine}", f"no model of {registry.path} traces on {machine}")
    return pairs


def _job_root(registry: reg.Registry) -> str:
    """The root a worker resolves: a $VAR/~ root as written (its host expands it), else this host's path."""
    return registry.root if registry.root.startswith(("$", "~")) else registry.root_dir


def cmd_trace_fleet(args: argparse.Namespace) -> int:
    """`sweepctl trace --model NAME | --all`: one trace job per (model, machine) on the machine's queue."""
    from broker import embedded
    from broker.app import make_app
    from broker.keys import Keys, default_prefix
    from broker.reports.summary import live_backends, workers
    from broker.traces import jobs as tracejobs

    if args.target:
        raise InputError(f"sweepctl trace {args.target}", "give a TARGET or --model/--all, not both")
    if args.model and args.all:
        raise InputError("--model", "give --model NAME or --all, not both")
    if args.timeout is not None and not args.timeout > 0:
        raise InputError("--timeout", f"{args.timeout:g}: give seconds > 0")
    registry = reg.load(models_path(args))
    pairs = _selected(args, registry)
    if not args.no_check:
        found = reg.collection_problems(registry, list({id(e): e for e, _ in pairs}.values()))
        if found:
            where, _, what = found[0].rpartition(": model ")
            raise InputError(where, f"model {what} (nothing queued)")
    url = embedded.resolve_url(args.redis)
    client = embedded.connect(url)
    keys = Keys(args.prefix or (embedded.read_state() or {}).get("prefix") or default_prefix())
    live = live_backends(workers(client, keys))
    idle = sorted({m for _, m in pairs if m not in live})
    if idle and args.wait:
        raise InputError(f"machine {idle[0]}", "no live worker: nothing queued (--wait would wait forever); start "
                         f"one with `sweepctl worker --machine {idle[0]}`")  # fmt: skip
    for machine in idle:
        print(f"sweepctl: warning: no live {machine} worker: its trace jobs wait until one starts", file=sys.stderr)
    root = _job_root(registry)
    jobs = [tracejobs.Job(tracejobs.new_uid(), e.name, m, e.test, root, e.timeout, dict(e.env), e.markers)
            for e, m in pairs]  # fmt: skip
    app = make_app(url, keys)
    started = time.monotonic()
    tracejobs.enqueue(app, client, keys, jobs)
    if not args.wait:
        if args.json:
            _print_json({"queued": [j.as_kwargs() for j in jobs]})
        else:
            print(f"queued {len(jobs)} trace jobs; merge their results with `sweepctl store pull`")
            for job in jobs:
                print(f"  {job.uid}  {job.model:<40} on {job.machine}")
        return 0
    per_machine: dict[str, float] = {}
    for job in jobs:
        per_machine[job.machine] = per_machine.get(job.machine, 0.0) + job.timeout
    limit = args.timeout or max(per_machine.values()) + WAIT_MARGIN
    uids = [j.uid for j in jobs]
    done = _wait(client, keys, app, uids, limit)
    from broker.traces.pull import pull

    pulled = pull(client, keys, args.store, uids)
    seconds = round(time.monotonic() - started, 3)
    rows = tracejobs.jobs(client, keys, uids)
    report = {**pulled.as_dict(), "seconds": seconds, "jobs": [_job_row(client, keys, r) for r in rows]}
    if args.json:
        _print_json(report)
    else:
        for row in report["jobs"]:
            print(f"{row['model']:<40} {row['machine']:<7} {row['outcome'] or row['state']:<8} "
                  f"{row['duration_s'] if row['duration_s'] is not None else '-':>7} s  {row['uid']}")  # fmt: skip
            if row["message"]:
                print(f"    {row['message'].splitlines()[0]}")
        _print_merge(pulled, args.store, seconds)
    missing = len(uids) - len(done)
    if missing:
        print(f"sweepctl: {missing} trace jobs not finished after {limit:g} s (their results merge at the next "
              "`sweepctl store pull`)", file=sys.stderr)  # fmt: skip
    return 0 if not missing and all(r["outcome"] == "passed" for r in report["jobs"]) else 1


WAIT_MARGIN = 300.0  # s on top of the longest machine's queue of timeouts: worker restarts, device resets


def _wait(client: Any, keys: Any, app: Any, uids: list[str], limit: float) -> list[str]:
    """Until every job has a result or `limit` s passed; jobs whose worker died are queued again."""
    from broker.traces import jobs as tracejobs
    from broker.traces.pull import finished

    deadline = time.monotonic() + limit
    while True:
        done = finished(client, keys, uids)
        if len(done) == len(uids) or time.monotonic() > deadline:
            return done
        tracejobs.requeue_lost(client, keys, app)
        time.sleep(0.25)


def _job_row(client: Any, keys: Any, row: dict[str, Any]) -> dict[str, Any]:
    from broker.traces import jobs as tracejobs

    result = tracejobs.result(client, keys, row["uid"]) if row.get("state") == tracejobs.DONE else None
    result = result or {}
    return {"uid": row["uid"], "model": row.get("model"), "machine": row.get("machine"), "state": row.get("state"),
            "outcome": result.get("outcome"), "message": result.get("message", ""),
            "duration_s": result.get("duration_s"), "worker": result.get("worker"), "host": result.get("host"),
            "ttnn_version": result.get("ttnn_version"), "configs": len(result.get("configs") or []),
            "tests": result.get("tests", {})}  # fmt: skip


def _print_merge(pulled: Any, store: str, seconds: float | None = None) -> None:
    from broker.cli import _print_merge as print_summary

    took = f" in {seconds:.1f} s" if seconds is not None else ""
    print(f"merged {len(pulled.traces)} trace results{took} ({pulled.already} merged before)")
    print_summary(pulled.summary.as_dict(), store)


def cmd_store_pull(args: argparse.Namespace) -> int:
    from broker.traces.pull import pull

    client, keys, _ = _connect(args)
    pulled = pull(client, keys, args.store)
    if args.json:
        _print_json(pulled.as_dict())
    else:
        for row in pulled.traces:
            print(f"  {row['uid']}  {row['model']:<40} {row['machine']:<7} {row['outcome']:<8} new {row['new']} "
                  f"known {row['known']}")  # fmt: skip
        _print_merge(pulled, args.store)
    for uid in pulled.undecodable:
        print(f"sweepctl: warning: trace {uid}: its result is of a newer sweepctl: not merged", file=sys.stderr)
    return 0


def cmd_models_status(args: argparse.Namespace) -> int:
    from broker.cli import default_store
    from broker.traces.status import model_status
    from tracer.store import MasterStore

    registry = reg.load(models_path(args), missing_ok=True)
    store_path = args.store or default_store()
    store = MasterStore.load(store_path) if os.path.exists(store_path) else None
    client, keys, _ = _connect(args)
    rows = model_status(client, keys, registry, store)
    if args.json:
        _print_json(rows)
        return 0
    print(f"{'model':<36} {'machine':<8} {'outcome':<8} {'when':<17} {'ttnn':<8} {'configs (new/known)':<20} swept")
    for row in rows:
        if row["state"] == "never":
            print(f"{row['model']:<36} {row['machine']:<8} {'never':<8} {'-':<17} {'-':<8} {'-':<20} -")
            continue
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["when"]))
        merged = row["merged"]
        added = f"{row['configs']} ({merged['new']}/{merged['known']})" if merged else f"{row['configs']} (not pulled)"
        swept = row["swept"]
        since = "-" if swept is None else ("yes" if swept["covered"] == swept["configs"] else "no") + (
            f" {swept['covered']}/{swept['configs']}")
        print(f"{row['model']:<36} {row['machine']:<8} {row['outcome'] or row['state']:<8} {when:<17} "
              f"{row['ttnn_version'] or '-':<8} {added:<20} {since}")  # fmt: skip
    return 0
