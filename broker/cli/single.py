"""The commands on one vector, outside the fleet: `sweepctl run` (run it in this process) and
`sweepctl repro` (write it as a standalone pytest file for a machine with the device). The
parser that wires them up is in broker/cli/__init__.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from broker.vectorref import Found
from sweeps import status
from tracer.errors import InputError


def find(args: argparse.Namespace) -> Found:
    """The vector VECTOR names: in `--store` (no Redis), else in `--run` (default: the latest run)."""
    from broker import vectorref

    vectorref.check_ref(args.vector)
    if args.store:
        if not os.path.exists(args.store):
            raise InputError(args.store, "no such master store")
        if args.run:
            raise InputError("--run", "give --run (a vector of a run in Redis) or --store, not both")
        return vectorref.in_store(args.store, args.vector, args.machine)
    if args.machine:
        raise InputError("--machine", "only with --store: a vector of a run has its machine already")
    from broker.cli.commands import _connect, _run_id

    client, keys, _ = _connect(args)
    return vectorref.in_run(client, keys, _run_id(args, client, keys), args.vector)


STOPPED_IN_DEBUGGER = 130  # exit status when the user quit pdb: no verdict, like an interrupt


def cmd_run(args: argparse.Namespace) -> int:
    """Exit 0 PASS, 1 any other verdict, 130 stopped in the debugger (2, bad input, from the CLI)."""
    import bdb

    from broker.results import make_record

    found = find(args)
    vector = found.vector
    if found.never_runs is not None:  # enqueue books it; no executor ever gets it
        out = sys.stdout.buffer
        record = make_record(vector, found.run_id or "", 0, found.never_runs, backend=args.backend)
    else:
        from workers.inprocess import prepare, run_here

        out = prepare(vector["machine"], args.backend)
        try:
            record = run_here(vector, args.backend, found.run_id)
        except bdb.BdbQuit:  # `q` at a breakpoint: the person debugging stopped it, no one failed
            print(f"sweepctl run: stopped in the debugger: vector {vector['id']} has no verdict", file=sys.stderr)
            return STOPPED_IN_DEBUGGER
    text = json.dumps(record, indent=2, default=str) if args.json else "\n".join(record_lines(found, record))
    out.write((text + "\n").encode())
    out.flush()
    return 0 if record["status"] == status.PASS else 1


def record_lines(found: Found, record: dict[str, Any]) -> list[str]:
    """The vector and its record, for a person."""
    from tracer.describe import describe_config

    vector = found.vector
    mesh = "x".join(map(str, vector["mesh_shape"]))
    lines = [f"vector {vector['id']} of {found.where}", f"  {vector['op']} on {vector['machine']}, mesh {mesh}"]
    lines += [f"    {line}" for line in describe_config({"args": vector["inputs"], "kwargs": vector["kwargs"]})]
    verdict = record["status"]
    if record.get("pcc") is not None:
        verdict += f"  pcc {record['pcc']:.6f} (threshold {record['threshold']}, set by {record['threshold_dtype']})"
    if record.get("e2e_ms") is not None:
        verdict += f"  e2e {record['e2e_ms']:.3f} ms"
    kernel = (record.get("device_perf") or {}).get("DEVICE KERNEL DURATION [ns]")
    if kernel is not None:
        verdict += f"  device kernel {kernel / 1e6:.3f} ms"
    lines.append(verdict)
    if record["message"]:
        lines.append(f"  {record['message']}")
    if found.never_runs is not None:
        lines.append("  (booked by enqueue: no worker runs this vector)")
    else:
        lines.append(f"  backend {record['backend']}, ttnn {record['ttnn_version']}; nothing written to Redis")
    return lines


def cmd_repro(args: argparse.Namespace) -> int:
    """Write the vector's standalone pytest file (workers/repro.py) to -o, or stdout."""
    from workers.repro import ReproError, render

    found = find(args)
    filename = os.path.basename(args.output) if args.output else f"repro_{found.vector['id'][:12]}.py"
    try:
        text = render(found.vector, found.where, _command(args, found), filename, found.never_runs)
    except ReproError as exc:
        raise InputError(f"vector {found.vector['id']}", str(exc)) from None
    if args.output:
        from broker.cli.commands import _write_output

        _write_output(args.output, text)
        print(f"wrote {args.output}: {found.vector['op']} on {found.vector['machine']}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _command(args: argparse.Namespace, found: Found) -> list[str]:
    """The sweepctl command line that writes this file again (the run named, not "the latest")."""
    command = ["sweepctl", "repro", args.vector]
    for flag, value in (("run", found.run_id), ("store", args.store), ("machine", args.machine)):
        if value:
            command += [f"--{flag}", value]
    return command + (["-o", args.output] if args.output else [])
