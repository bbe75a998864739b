"""The fleet-tracing commands of `sweepctl`: `models list|show|check|discover|status`, `trace --model
NAME | --all` (trace jobs on the workers) and `store pull` (their results into the master store).
The parser that wires them up is in broker/cli.py."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from tracer import registry as reg
from tracer.errors import InputError


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


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
        "Node ids already registered are skipped. --write adds them to the registry.",
    )
    discover.add_argument("path", help="test file or directory, under the registry's root")
    discover.add_argument("--machine", required=True, help="machine types the new entries trace on: n300[,t3k]")
    discover.add_argument("-k", help="pytest -k expression")
    discover.add_argument("-m", help="pytest -m marker expression (also kept as the entries' markers)")
    discover.add_argument("--env", action="append", metavar="NAME=VALUE", help="env of the new entries (repeat)")
    discover.add_argument("--timeout", type=float, default=reg.DEFAULT_TIMEOUT, help="s (default: %(default)g)")
    discover.add_argument("--root", help="root of a new registry file (default: its directory)")
    discover.add_argument("--write", action="store_true", help="add the proposed entries to the registry")
