"""`sweepctl`: one entry point for tracing, the master store, queuing, workers and reports.

User mistakes end in one line on stderr and exit code 2, never a traceback. Stdout carries only
the command's output (`--json` is always parseable): log events are JSON lines on stderr, or
appended to $SWEEPCTL_LOG_FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, NoReturn

from tracer.errors import InputError

DEFAULT_STORE = "ttnn_operations_master.json"


def default_store() -> str:
    return os.environ.get("SWEEPCTL_STORE", DEFAULT_STORE)


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _print_merge(summary: dict[str, Any], store: str) -> None:
    print(f"{store}: {summary['new_configs']} new configs, {summary['known_configs']} already known")
    for op, row in summary["per_op"].items():
        print(f"  {op:<45} new {row['new']:>6}  known {row['known']:>6}")


# --- tracer commands -------------------------------------------------------------------------


def cmd_trace(args: argparse.Namespace) -> int:
    from sweeps.profiles import get_profile
    from tracer.capture import capture
    from tracer.machine import detect_machine_info
    from tracer.store import MasterStore, locked

    if args.model or args.all:
        from broker.cli.tracecmds import cmd_trace_fleet

        return cmd_trace_fleet(args)
    if not args.target:
        raise InputError("sweepctl trace", "give a TARGET (pytest node id or script), --model NAME or --all")
    store = MasterStore.load(args.store)  # fail on a bad store before running anything
    machine_info = detect_machine_info()
    env: dict[str, str] = {}
    if machine_info is None:
        if not args.machine:
            raise InputError("sweepctl trace", "no tt-smi on this host: say which machine with --machine")
        profile = get_profile(args.machine)
        machine_info = profile.machine_info()
        env["TT_METAL_MOCK_CLUSTER_DESC_PATH"] = os.environ.get(
            "TT_METAL_MOCK_CLUSTER_DESC_PATH", profile.mock_cluster_path
        )
    from broker.traces.jobs import new_uid

    trace_uid = args.trace_uid or new_uid()
    result = capture(args.target, machine_info, args.with_values, env, trace_uid=trace_uid)
    passed = sorted(n for n, s in result.tests.items() if s == "passed")
    others = {n: s for n, s in result.tests.items() if s != "passed"}
    if not passed:
        print(f"sweepctl: no passing test in {args.target}: nothing merged, {args.store} untouched", file=sys.stderr)
        return 1
    with locked(args.store):  # what merged into the store meanwhile (a pull, an import) is kept
        store = MasterStore.load(args.store)
        summary = store.merge(result.entries).as_dict()
        store.trace_uid = trace_uid  # metadata.trace_uid: the last trace run merged, as tt-metal's tracer records it
        store.save(args.store)
    summary["tests"] = result.tests
    if args.json:
        _print_json(summary)
    else:
        print(f"traced {len(passed)} passed tests ({len(others)} failed or skipped, their traces dropped)")
        _print_merge(summary, args.store)
    return 0


def cmd_store_import(args: argparse.Namespace) -> int:
    from tracer.store import MasterStore, load_inputs, locked

    MasterStore.load(args.into)  # a bad store fails before the inputs are read
    inputs = load_inputs(args.inputs)  # everything parsed before anything is written
    with locked(args.into):
        store = MasterStore.load(args.into)
        summary = store.merge(inputs.entries).as_dict()
        store.trace_uid = inputs.trace_uid or store.trace_uid
        store.save(args.into)
    if args.json:
        _print_json(summary)
    else:
        _print_merge(summary, args.into)
    return 0


def cmd_store_pull(args: argparse.Namespace) -> int:
    from broker.cli.tracecmds import cmd_store_pull as pull

    return pull(args)


def cmd_store_stats(args: argparse.Namespace) -> int:
    from tracer.store import MasterStore

    stats = MasterStore.load(args.store, missing_ok=False).stats()
    if args.json:
        _print_json(stats)
        return 0
    print(
        f"store {args.store}: {stats['ops']} ops, {stats['configs']} configs, {len(stats['models'])} models, "
        f"{stats['unparsed_args']} unparsed args"
    )
    print("machines: " + ", ".join(f"{m} ({n})" for m, n in stats["machines"].items()))
    print(f"{'op':<45} {'configs':>8} {'calls':>8} {'unparsed':>9}  models")
    for op, row in stats["per_op"].items():
        print(f"{op:<45} {row['configs']:>8} {row['executions']:>8} {row['unparsed_args']:>9}  {len(row['models'])}")
    return 0


def cmd_store_verify(args: argparse.Namespace) -> int:
    from tracer.store import MasterStore

    store = MasterStore.load(args.store, missing_ok=False)
    report = store.hash_versions()
    stale, versions = report["stale"], report["versions"]
    if args.json:
        _print_json(report)
    else:
        print(
            f"{args.store}: {len(store)} configs: {versions['current']} carry the current config_hash, "
            f"{versions['legacy']} the legacy (unnormalised) one, {len(stale)} neither (stale)"
        )
        for row in stale:
            stored, recomputed = row["stored"][:16], row["recomputed"][:16]
            print(f"  {row['op']} config {row['config_id']}: stored {stored} recomputed {recomputed}")
    return 1 if stale else 0


def cmd_store_validate(args: argparse.Namespace) -> int:
    from sweeps.profiles import get_profile, route
    from sweeps.validate import validate_store_configs
    from tracer.args import canonical_arguments
    from tracer.machine import machine_label
    from tracer.opnames import canonical_op_name
    from tracer.store import MasterStore

    store = MasterStore.load(args.store, missing_ok=False)
    op = canonical_op_name(args.op) if args.op else None
    override = get_profile(args.machine) if args.machine else None
    checks, unroutable = [], []
    for name, entry in store.entries(op):
        if override is not None:
            checks.append((name, entry, override.name))
            continue
        profiles, labels = set(), set()
        for run in entry["executions"]:  # every machine it was traced on: each makes its own vector
            info = run.get("machine_info")
            profile = route(info)
            if profile is not None:
                profiles.add(profile.name)
            elif machine_label(info) not in labels:
                labels.add(machine_label(info))
                unroutable.append({"op": name, "config_hash": entry["config_hash"], "machine": machine_label(info)})
        checks.extend((name, entry, machine) for machine in sorted(profiles))
    reasons = validate_store_configs([(n, canonical_arguments(e["arguments"]), m) for n, e, m in checks])
    invalid = [
        {"op": n, "config_hash": e["config_hash"], "machine": m, "reason": r}
        for (n, e, m), r in zip(checks, reasons, strict=True)
        if r is not None
    ]
    if args.json:
        _print_json({"checked": len(checks), "invalid": invalid, "no_machine": unroutable})
    else:
        print(
            f"{args.store}: {len(checks)} configs checked, {len(invalid)} INVALID, "
            f"{len(unroutable)} with no machine profile"
        )
        for row in invalid:
            print(f"  INVALID {row['op']} {row['config_hash'][:12]} on {row['machine']}: {row['reason']}")
        for row in unroutable:
            print(f"  NO MACHINE {row['op']} {row['config_hash'][:12]}: traced on {row['machine']} (use --machine)")
    return 0


def cmd_configs(args: argparse.Namespace) -> int:
    from tracer.args import canonical_arguments, count_unparsed
    from tracer.describe import describe_config
    from tracer.machine import machine_label
    from tracer.opnames import canonical_op_name
    from tracer.store import MasterStore, model_of

    store = MasterStore.load(args.store, missing_ok=False)
    op = canonical_op_name(args.op)
    if op not in store.ops:
        raise InputError(f"{args.store}: {op}", f"no configs of this op (the store has {len(store.ops)} ops)")
    rows = []
    for _, entry in store.entries(op):
        canonical = canonical_arguments(entry["arguments"])
        runs = entry["executions"]
        rows.append(
            {
                "config_hash": entry["config_hash"],
                "canonical": canonical,
                "unparsed_args": count_unparsed(canonical),
                "calls": sum(r["count"] for r in runs),
                "models": sorted({model_of(r.get("source")) for r in runs}),
                "machines": sorted({machine_label(r.get("machine_info")) for r in runs}),
            }
        )
    if args.json:
        _print_json({"op": op, "configs": rows})
        return 0
    print(f"{op}: {len(rows)} configs")
    for number, row in enumerate(rows, 1):
        flag = f"  [{row['unparsed_args']} UNPARSED]" if row["unparsed_args"] else ""
        print(f"\n#{number} {row['config_hash'][:12]}  calls {row['calls']}  on {', '.join(row['machines'])}{flag}")
        for line in describe_config(row["canonical"]):
            print(f"    {line}")
        print(f"    models: {', '.join(row['models'])}")
    return 0


# --- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweepctl",
        description=(
            "Distributed runner for TTNN op sweeps: trace model tests into a master store, expand "
            "configs into vectors, queue them per machine type, run them on workers, report."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "typical flow:\n"
            "  sweepctl trace models/tests/test_llama.py::test_decode --machine n300\n"
            "  sweepctl trace --all --wait      # registered models (sweepctl models) on the fleet\n"
            "  sweepctl store stats\n"
            "  sweepctl configs ttnn.pad\n"
            "  sweepctl up                     # embedded Redis + emulated workers\n"
            "  sweepctl enqueue --op pad --suite model_traced\n"
            "  sweepctl watch; sweepctl report\n"
            "  sweepctl report --compare BASE; sweepctl report --format html -o report.html\n"
            "  sweepctl run VECTOR --backend emulated   # one failing vector in this process (pdb works)\n"
            "  sweepctl repro VECTOR -o repro.py        # the same as a pytest file for a device host\n"
            "exit codes: 0 ok, 1 the work found failures, 2 bad input (one line on stderr)"
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    trace = sub.add_parser(
        "trace",
        help="run a model test with ttnn's op tracer and merge its configs; or queue registered models on the fleet",
        description="Run TARGET (a pytest node id or a script) in a child process with "
        "ttnn's operation tracer on; traces of passed tests only are merged into the store. "
        "With --model NAME or --all, queue one trace job per (registered model, machine type) of the model "
        "registry (see `sweepctl models`) on the machines' queues instead: the workers run them between sweep "
        "chunks, and `sweepctl store pull` (or --wait) merges their results, each trace once. Before queueing, "
        "every selected entry must be collectable by pytest (--no-check skips that); an unknown model, or with "
        "--wait a machine type without a live worker, queues nothing (exit 2).",
    )
    trace.add_argument("target", nargs="?", help="pytest node id (path::test) or a python script")
    trace.add_argument("--model", help="queue this registered model on its machine types")
    trace.add_argument("--all", action="store_true", help="queue every registered model on its machine types")
    trace.add_argument("--models", help="model registry (default $SWEEPCTL_MODELS, else models.yaml beside --store)")
    trace.add_argument(
        "--wait", action="store_true",
        help="with --model/--all: wait for the results and merge them into --store (exit 1 unless every job passed)",
    )  # fmt: skip
    trace.add_argument(
        "--timeout", type=float,
        help="with --wait: give up waiting after this many s (default: the longest machine's queue of entry "
        "timeouts + 300)",
    )  # fmt: skip
    trace.add_argument("--no-check", action="store_true", help="queue without pytest's collection check")
    trace.add_argument("--redis", help="with --model/--all: Redis URL (default $SWEEPCTL_REDIS_URL, else `up`'s)")
    trace.add_argument("--prefix", help="with --model/--all: key prefix (default $SWEEPCTL_PREFIX or sweepctl)")
    trace.add_argument("--store", default=default_store(), help="master store to merge into (default: %(default)s)")
    trace.add_argument(
        "--machine",
        help="machine type when tt-smi is absent (n150, n300, t3k, galaxy, p150, p300); "
        "also selects the mock cluster on hosts without a device. With --model/--all: only this machine type",
    )
    trace.add_argument("--with-values", action="store_true", help="keep tensor values in the traces")
    trace.add_argument(
        "--trace-uid", help="id of this trace run; runs with distinct ids add their call counts (default: a new id)"
    )
    trace.add_argument("--json", action="store_true", help="machine-readable summary")
    trace.set_defaults(func=cmd_trace)

    store = sub.add_parser("store", help="import, inspect and validate the master store")
    store_sub = store.add_subparsers(dest="store_command", required=True, metavar="STORE_COMMAND")
    imp = store_sub.add_parser(
        "import",
        help="merge master JSON files (any tt-metal dialect) or operation_tracer directories into a store",
        description="Merge master JSON files (any tt-metal dialect, written back in the current one) or "
        "operation_tracer directories into a store, as tt-metal's tracer does: a directory's "
        "_trace_metadata.json gives its source, machine and trace_uid (without it: the directory's name and "
        "this host's machine); one argument set is one config whatever machines traced it; new configs get "
        "the current config_hash, stored ones are kept.",
    )
    imp.add_argument("inputs", nargs="+", metavar="FILE|DIR")
    imp.add_argument("--into", default=default_store(), help="store to merge into (default: %(default)s)")
    imp.add_argument("--json", action="store_true")
    imp.set_defaults(func=cmd_store_import)

    def store_command(name: str, help_text: str, func) -> argparse.ArgumentParser:
        """`sweepctl store NAME [STORE] [--json]`: the shape every read-only store command shares."""
        command = store_sub.add_parser(name, help=help_text)
        command.add_argument("store", nargs="?", default=default_store())
        command.add_argument("--json", action="store_true")
        command.set_defaults(func=func)
        return command

    store_command("stats", "ops, configs, models, machines and unparsed args of a store", cmd_store_stats)
    store_command(
        "verify",
        "recompute every config_hash (tt-metal's preflight check) in both of tt-metal's versions, the current "
        "(normalised) one and the legacy one older stores hold; count each; exit 1 when neither reproduces a "
        "stored hash",
        cmd_store_verify,
    )
    validate = store_command(
        "validate",
        "list configs that fail host validation (INVALID) with ttnn's reason; they are never sent to a device",
        cmd_store_validate,
    )
    pull = store_sub.add_parser(
        "pull",
        help="merge finished fleet trace results (`trace --model/--all`) into the store, each trace once",
        description="Merge every finished trace job's result from Redis that the store has not merged yet "
        "(metadata.sweepctl_merged_traces names the ones it has), under the store's lock: running it again, or "
        "two at once, never counts a trace twice nor loses one. Only passed tests' configs are in a result.",
    )
    pull.add_argument("store", nargs="?", default=default_store())
    pull.add_argument("--redis", help="Redis URL (default $SWEEPCTL_REDIS_URL, else the embedded Redis of `up`)")
    pull.add_argument("--prefix", help="key prefix (default $SWEEPCTL_PREFIX or sweepctl)")
    pull.add_argument("--json", action="store_true")
    pull.set_defaults(func=cmd_store_pull)
    validate.add_argument("--op", help="only this op")
    validate.add_argument("--machine", help="validate for this machine type instead of the traced one")

    configs = sub.add_parser("configs", help="every config of one op, readably")
    configs.add_argument("op", help="op name: ttnn.pad, ttnn::pad or pad")
    configs.add_argument("--store", default=default_store())
    configs.add_argument("--json", action="store_true")
    configs.set_defaults(func=cmd_configs)
    _runtime_parsers(sub)
    from broker.cli import tracecmds

    tracecmds.add_parsers(sub)
    _single_vector_parsers(sub)
    return parser


def _runtime_parsers(sub: Any) -> None:
    """Queues, workers and results (broker/cli/commands.py)."""
    from broker.cli import commands as c
    from broker.coordinator import CHUNK_LIMIT, MAX_CHUNK
    from broker.registry import LIVE_WITHIN

    def connected(name: str, help_text: str, func, description: str | None = None) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=description or help_text)
        command.add_argument(
            "--redis",
            help="Redis URL (redis://, rediss:// for TLS, user:password@ for ACLs); default "
            "$SWEEPCTL_REDIS_URL, else the embedded Redis of `sweepctl up`",
        )
        command.add_argument(
            "--prefix", help="key prefix, so teams can share a Redis (default $SWEEPCTL_PREFIX or sweepctl)"
        )
        command.add_argument("--json", action="store_true", help="machine-readable output")
        command.set_defaults(func=func)
        return command

    ops = sub.add_parser(
        "ops",
        help="the op catalogue: which ops have a sweep definition, their family, golden (ttnn's or an adapter of "
        "sweeps/adapters.py), required arguments and thresholds",
    )
    ops.add_argument("--store", help="also list the ops of this store that have no definition")
    ops.add_argument("--json", action="store_true")
    ops.set_defaults(func=c.cmd_ops)

    enqueue = connected(
        "enqueue",
        "expand traced configs into vectors and queue them per machine type",
        c.cmd_enqueue,
        "Expand the selected configs of the master store into vectors, host-validate them (INVALID configs "
        "are recorded, never queued), record a run and publish the rest in chunks to each machine's queue. "
        "Re-running with the same --run-id adds nothing twice, and queues what an interrupted enqueue of it "
        "(killed, or Redis lost: exit 2) stored but never queued; a second enqueue of a run id while another "
        "is still writing it is refused, unless that one is gone (its pid no longer runs on this host, or "
        "its lock missed its heartbeats), whose lock is taken over at once. The run's total is the vectors "
        "it stores. A machine type with queued vectors and no live worker is said so on stderr (and in "
        "--json as no_live_worker). An empty selection is an error: no run is made. The store is read "
        "through its index in $SWEEPCTL_CACHE_DIR "
        "(default ~/.cache/sweepctl), rebuilt whenever the store file or sweepctl changes: the first enqueue "
        "of a store pays for parsing it and for host validation, later ones do not. --json gives the "
        "seconds spent per phase.",
    )
    enqueue.add_argument("--op", help="op or comma-separated ops (ttnn.pad, pad, ttnn::pad); default: every op")
    enqueue.add_argument("--suite", default="model_traced", help="model_traced (default), all_cases or nightly")
    enqueue.add_argument("--store", default=default_store(), help="master store (default: %(default)s)")
    enqueue.add_argument("--machine", help="run on this machine type instead of the traced one")
    enqueue.add_argument("--model", help="only configs traced from models whose name contains this")
    enqueue.add_argument("-k", help="only configs whose op, config hash or source contains this")
    enqueue.add_argument(
        "--dry-run",
        action="store_true",
        help="expand and validate, print what would go where; above the all_cases cap it counts what "
        "the enqueue with the cap raised would queue",
    )
    enqueue.add_argument("--run-id", help="add to this run (idempotent) instead of a new one")
    enqueue.add_argument(
        "--chunk",
        type=int,
        help=f"vectors per queue message, 1 to {CHUNK_LIMIT} (default: a run cut into 64 messages per "
        f"machine, at most {MAX_CHUNK})",
    )
    enqueue.add_argument(
        "--max-vectors", type=int, default=10_000, help="cap for all_cases products (default: %(default)s)"
    )
    enqueue.add_argument(
        "--expires",
        type=float,
        help="seconds after which vectors not yet run are EXPIRED, even when no worker ever comes "
        "(booked by the next status, watch, report, runs or enqueue); the first enqueue of a run that gives "
        "it sets it",
    )
    enqueue.add_argument(
        "--reuse",
        metavar="BASE",
        help="book REUSED (not run again, counted apart) each vector whose id PASSED in run BASE on the "
        "same machine type, this ttnn version and the backend this machine's live workers run; failed, "
        "hung, crashed or infra results are never reused",
    )

    worker = connected(
        "worker",
        "run a worker daemon for one machine type (solo Celery worker + an executor owning the devices); "
        "it exits with status 3 after 90 s without Redis (a live worker takes its chunk over)",
        c.cmd_worker,
    )
    worker.add_argument("--machine", help="machine type: n150, n300, t3k, galaxy, p150, p300")
    worker.add_argument(
        "--devices",
        help="PCIe device ids this worker owns (TT_VISIBLE_DEVICES: a PCIe device, not a chip: an "
        "N300 card is 1 with 2 chips, a T3K 4, a Galaxy 32), as many as the machine has: 0 or 0-3 or 4-7 "
        "(default: 0 up to the machine's count)",
    )
    worker.add_argument(
        "--instance",
        metavar="MACHINE:DEVICES",
        help="machine and device set in one word, as a systemd instance names them (galaxy:0-31, n300:2-3); "
        "instead of --machine and --devices, and the default --name is MACHINE:DEVICES@host",
    )
    worker.add_argument("--backend", choices=("ttnn", "emulated"), default="ttnn", help="default: %(default)s")
    worker.add_argument(
        "--name",
        help="worker name (default: machine-backend-pid@host); refused (exit 2) while a live worker has it",
    )
    worker.add_argument(
        "--events",
        action="store_true",
        help="send Celery task events and worker heartbeats, so Flower shows this worker, its queue and "
        "its chunks (off by default: Redis traffic the device does not need; `celery -A broker.app inspect` "
        "works either way)",
    )

    up = sub.add_parser(
        "up",
        help="start the embedded Redis and emulated workers on this host",
        description="Start the embedded Redis (a redis-server on 127.0.0.1, its data in $SWEEPCTL_HOME) and "
        "the emulated workers asked for that are not running yet, each under a free name (emu-MACHINE-N@host). "
        "After the Redis died, `up` restarts it on the same port and data dir: its data loads and the "
        "running workers reconnect.",
    )
    up.add_argument("--machines", help="comma-separated machine types (default: every profile)")
    up.add_argument("--workers", type=int, default=1, help="workers per machine type (default: %(default)s)")
    up.add_argument("--prefix", help="key prefix (default $SWEEPCTL_PREFIX or sweepctl)")
    up.add_argument("--no-wait", action="store_true", help="do not wait for the executors to open")
    up.add_argument(
        "--events",
        action="store_true",
        help="start the new workers with --events (task events and heartbeats for Flower); running ones keep theirs",
    )
    up.add_argument("--json", action="store_true")
    up.set_defaults(func=c.cmd_up)
    down = sub.add_parser(
        "down",
        help="stop the workers and the Redis that `sweepctl up` started, nothing else",
        description="Stop every process `sweepctl up` started that still runs (each verified by pid and start "
        "time, so a reused pid is never signalled): the workers with their executors, then the Redis, also "
        "one restarted by hand on its port. Exit 1, keeping the state, when one would not stop.",
    )
    down.add_argument("--json", action="store_true")
    down.set_defaults(func=c.cmd_down)

    workers = connected(
        "workers",
        "workers: machine, devices, backend, health, current vector, last heartbeat (--json: also host, pid); "
        f"a worker whose heartbeat lapsed {LIVE_WITHIN:g} s ago shows LOST for a day",
        c.cmd_workers,
    )
    workers.add_argument("--release", metavar="NAME", help="return a quarantined (BAD) worker to service")
    cancel = connected(
        "cancel", "cancel a run: vectors not yet run become CANCELED, running ones are killed and booked", c.cmd_cancel
    )
    cancel.add_argument("run", help="run id")
    retry = connected("retry", "a new attempt for the vectors of a run that ended in these statuses", c.cmd_retry)
    retry.add_argument("run", help="run id")
    retry.add_argument(
        "--status", nargs="+", required=True,
        help="e.g. HANG CRASH INFRA FAIL_OP, or ERROR once a fixed sweepctl runs on the workers",
    )  # fmt: skip
    runs = connected("runs", "recent runs", c.cmd_runs)
    runs.add_argument("--limit", type=int, default=20)
    for name, help_text, func in (
        (
            "status",
            "one progress line for a run: done/total (the vectors it stores), rate, ETA, counts by status, machine "
            "types whose vectors wait with no live worker, an enqueue still writing it or interrupted",
            c.cmd_status,
        ),
        (
            "watch",
            "a live progress bar until the run is complete (every vector final, no enqueue writing it): exit 0, "
            "whatever the statuses (see report); exit 1 at --timeout. Into a log: a line when something changed, "
            "at most every 10 s",
            c.cmd_watch,
        ),
        (
            "report",
            "per op and machine: executed, pass, fails by status, pass rate, PCC, e2e; failure buckets; "
            "failing vectors; sweepctl's own failures (ERROR) first. Exit 1 when anything executed failed (with "
            "--expectations: failed unexpectedly; with --compare: regressed against the base), and whenever any "
            "vector is ERROR",
            c.cmd_report,
        ),
    ):
        command = connected(name, help_text, func)
        command.add_argument("run", nargs="?", help="run id (default: the latest run)")
        if name == "watch":
            command.add_argument("--timeout", type=float, help="give up after this many seconds (exit 1)")
        if name == "report":
            _report_options(command)

    expectations = sub.add_parser(
        "expectations",
        help="the expectations file: expected_passing / known_failure / not_supported / exclude per op, config, model",
    )
    exp_sub = expectations.add_subparsers(dest="expectations_command", required=True, metavar="EXPECTATIONS_COMMAND")
    check = exp_sub.add_parser(
        "check",
        help="validate an expectations file: its schema, unknown ops and machines, stale config hashes, "
        "models the store never traced. Exit 1 when anything is found",
    )
    check.add_argument("file", help="expectations YAML")
    check.add_argument("--store", help="master store to check hashes and models against")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=c.cmd_expectations_check)

    demo = connected(
        "demo",
        "the whole job on the sample store shipped with sweepctl: up, enqueue, progress, report",
        c.cmd_demo,
    )
    demo.add_argument("--store", default=c.SAMPLE_STORE, help="master store (default: the shipped sample)")
    demo.add_argument("--keep", action="store_true", help="leave the embedded Redis and workers running")
    demo.add_argument("--timeout", type=float, default=600.0, help="give up waiting after this many seconds")


def _single_vector_parsers(sub: Any) -> None:
    """One vector outside the fleet (broker/cli/single.py)."""
    from broker.cli import single

    def one_vector(name: str, help_text: str, description: str, func) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=description)
        command.add_argument(
            "vector", help="vector id, or a unique prefix of one (reports print 12 digits); with --store also a "
            "config hash",
        )  # fmt: skip
        command.add_argument("--run", help="the run the vector is in (default: the latest run)")
        command.add_argument(
            "--store", help="build the vector from this master store as enqueue would (model_traced), without Redis"
        )
        command.add_argument("--machine", help="with --store: the machine type to run it on instead of the traced one")
        command.add_argument("--redis", help="Redis URL (default $SWEEPCTL_REDIS_URL, else the embedded Redis)")
        command.add_argument("--prefix", help="key prefix (default $SWEEPCTL_PREFIX or sweepctl)")
        command.set_defaults(func=func)
        return command

    run = one_vector(
        "run",
        "run one vector in this process (no Celery, no executor: pdb and breakpoints work); print its record",
        "Run one vector in this process, set up as a worker's executor is (the machine's mock cluster "
        "descriptor when emulated, the device set on ttnn, a working directory of its own, ttnn's output "
        "on stderr), and print the record a worker would write. Nothing is written to Redis and nothing "
        "bounds its time, so a debugger can stop it: python -m pdb -m broker.cli run VECTOR --backend "
        "emulated. A vector enqueue books NOT_RUN or INVALID is not run: its verdict is printed. On the "
        "ttnn backend a device that cannot be opened is INFRA, with the reason. Exit 0 PASS, 1 any other "
        "verdict, 2 bad input, 130 stopped in the debugger (q at a breakpoint: no verdict).",
        single.cmd_run,
    )
    run.add_argument("--backend", choices=("emulated", "ttnn"), required=True, help="emulated (no device) or ttnn")
    run.add_argument("--json", action="store_true", help="the record as JSON")
    repro = one_vector(
        "repro",
        "write one vector as a standalone pytest file to run on a machine with the device (for a bug report)",
        "Write one vector as a standalone pytest file for a host with the device: it opens the mesh as "
        "sweepctl's device backend does for this vector (mesh and submesh, fabric set before the open and "
        "cleared after the close, dispatch core type and axis, L1_SMALL), sends each input with its traced "
        "dtype, layout, exact memory config and mesh mapper, calls the op with the traced arguments (a warm-"
        "up, then a timed call), reads back the output of the chip the sweep judges, checks its PCC against "
        "the golden, printing the timings. The device calls are literal ttnn code; the input data and the "
        "golden come from sweepctl (the same seeded generator and golden as the sweep), so sweepctl must be "
        "importable where it runs. Refused (exit 2) for a vector that cannot be called as traced (NOT_RUN) or"
        " that no mesh of its machine holds.",
        single.cmd_repro,
    )
    repro.add_argument("--output", "-o", help="the file to write (default: stdout)")


def _report_options(command: argparse.ArgumentParser) -> None:
    from broker.reports.compare import E2E_TOLERANCE_PCT, PCC_TOLERANCE
    from broker.reports.export import FORMATS

    command.add_argument("--limit", type=int, default=50, help="failing vectors to list (default: %(default)s)")
    command.add_argument(
        "--by", choices=("op", "machine", "model"), default="op",
        help="op (default); machine: each machine then its ops; model: every unique config each model "
        "traced with its status on each machine",
    )  # fmt: skip
    command.add_argument("--model", help="with --by model: only models whose name contains this")
    command.add_argument(
        "--format", choices=("text", *FORMATS), default="text",
        help="text (default); json; csv and junit (one row / testcase per vector); html (offline page with "
        "plots); optest (tt-metal's OpRun/OpTest JSON for its Superset import)",
    )  # fmt: skip
    command.add_argument(
        "--output", "-o", help="write here instead of stdout (optest: a directory gets tt-metal's file name)"
    )
    command.add_argument("--compare", metavar="BASE", help="compare against run BASE; exit 1 when this run regressed")
    command.add_argument(
        "--pcc-tolerance", type=float, default=PCC_TOLERANCE, help="PCC drop that counts (default: %(default)s)"
    )
    command.add_argument(
        "--e2e-tolerance", type=float, default=E2E_TOLERANCE_PCT,
        help="e2e slowdown in %% that counts (default: %(default)s)",
    )  # fmt: skip
    command.add_argument("--ignore-perf", action="store_true", help="e2e regressions are listed but do not fail")
    command.add_argument("--expectations", metavar="FILE", help="judge against this expectations YAML (XFAIL/XPASS)")


def _acl_refusal(exc: Exception) -> str | None:
    """The line for a Redis ACL refusal (the user's role may not do this), else None."""
    from redis.exceptions import NoPermissionError

    if isinstance(exc, NoPermissionError):
        return f"redis: refused by the ACL of this Redis user ({exc})"
    return None


def configure_logging() -> None:
    """structlog for every command: JSON lines on stderr (or $SWEEPCTL_LOG_FILE), never on stdout."""
    import structlog

    path = os.environ.get("SWEEPCTL_LOG_FILE")
    try:
        log_file = open(path, "a", encoding="utf-8", buffering=1) if path else None  # noqa: SIM115 - the process's
    except OSError as exc:
        raise InputError(f"SWEEPCTL_LOG_FILE {path}", exc.strerror or str(exc)) from None
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=lambda *_: structlog.PrintLogger(log_file or sys.stderr),  # stderr as it is when logging
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        configure_logging()
        return args.func(args)
    except InputError as exc:
        print(f"sweepctl: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `sweepctl configs pad | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        from broker.coordinator import CONNECTION_LOST

        denied = _acl_refusal(exc)
        if denied is not None:
            print(f"sweepctl: error: {denied}", file=sys.stderr)
        elif isinstance(exc, CONNECTION_LOST):
            print(f"sweepctl: error: redis: connection lost ({exc})", file=sys.stderr)
        else:
            raise
        return 2
    except KeyboardInterrupt:
        print("sweepctl: interrupted", file=sys.stderr)
        return 130


def run() -> NoReturn:
    """The `sweepctl` program: main(), then exit with its status. The heap is frozen first (gc.freeze),
    so the interpreter's last collection at exit does not traverse it: the process ends, nothing leaks.
    Only here, never in main(), which tests and other programs call in their own long-lived process."""
    import gc

    code = main()
    gc.freeze()
    sys.exit(code)
