"""The runtime commands of `sweepctl`: ops, enqueue, worker, up/down, status/watch, workers,
runs, report and demo. The parser that wires them up is in broker/cli/__init__.py.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from broker import embedded
from broker.keys import Keys, default_prefix
from tracer.errors import InputError

SAMPLE_STORE = str(Path(__file__).resolve().parents[1] / "sweeps" / "data" / "sample_master.json")


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _connect(args: argparse.Namespace) -> tuple[Any, Keys, str]:
    url = embedded.resolve_url(getattr(args, "redis", None))
    prefix = getattr(args, "prefix", None) or (embedded.read_state() or {}).get("prefix") or default_prefix()
    return embedded.connect(url), Keys(prefix), url


def _run_id(args: argparse.Namespace, client: Any, keys: Keys) -> str:
    from broker.coordinator import latest_run

    run_id = args.run or latest_run(client, keys)
    if run_id is None:
        raise InputError("run", "no runs in this Redis yet (start one with `sweepctl enqueue`)")
    return run_id


# --- ops ---------------------------------------------------------------------------------------


def cmd_ops(args: argparse.Namespace) -> int:
    from sweeps import catalogue

    rows = [
        {
            "op": op.name,
            "family": op.family,
            "adapter": op.adapter,
            "golden": "sweeps.adapters" if op.adapter else "ttnn.get_golden_function",
            "requires": list(op.requires),
            "timeout_s": op.timeout,
            "thresholds": {**catalogue.THRESHOLDS, **op.thresholds},
        }
        for op in sorted(catalogue.CATALOGUE.values(), key=lambda o: (o.family, o.name))
    ]
    uncovered: list[str] = []
    if args.store:
        from tracer.store import MasterStore

        store = MasterStore.load(args.store, missing_ok=False)
        uncovered = sorted(op for op in store.ops if catalogue.lookup(op) is None)
    if args.json:
        _print_json({"ops": rows, "store_ops_without_definition": uncovered})
        return 0
    adapters = sum(row["adapter"] for row in rows)
    print(f"{len(rows)} ops covered, in {len(catalogue.families())} families; {adapters} with an adapter")
    family = None
    for row in rows:
        if row["family"] != family:
            family = row["family"]
            print(f"\n{family}:")
        print(f"  {row['op']:<48} golden {row['golden']:<26} timeout {row['timeout_s']:g}s")
    print(
        "\nPCC thresholds by the least precise dtype: " + ", ".join(f"{d} {t}" for d, t in catalogue.THRESHOLDS.items())
    )
    if args.store:
        print(
            f"\nops in {args.store} without a sweep definition (their vectors end NOT_RUN): "
            f"{', '.join(uncovered) or 'none'}"
        )
    return 0


# --- enqueue -----------------------------------------------------------------------------------


def _selection(args: argparse.Namespace):
    from broker.coordinator import CHUNK_LIMIT
    from sweeps.profiles import get_profile
    from sweeps.suites import SUITES, Selection
    from tracer.opnames import canonical_op_name

    if args.suite not in SUITES:
        raise InputError("--suite", f"unknown suite {args.suite!r} (known: {', '.join(SUITES)})")
    if args.machine:
        get_profile(args.machine)
    if args.chunk is not None and not 1 <= args.chunk <= CHUNK_LIMIT:
        raise InputError("--chunk", f"{args.chunk} vectors per message: give 1 to {CHUNK_LIMIT}")
    if args.max_vectors < 1:
        raise InputError("--max-vectors", f"{args.max_vectors}: the all_cases cap is at least 1")
    if args.expires is not None and not args.expires > 0:
        raise InputError("--expires", f"{args.expires}: give the seconds after which unrun vectors expire (> 0)")
    ops = None
    if args.op is not None:
        ops = [canonical_op_name(o.strip()) for o in args.op.split(",") if o.strip()]
        if not ops:
            raise InputError("--op", f"{args.op!r} names no op")
    return Selection(ops, args.suite, args.machine, args.model, args.k, args.max_vectors)


def _no_worker(client: Any, keys: Keys, waiting: dict[str, int]) -> dict[str, int]:
    """The machine types of `waiting` (machine -> vectors not yet final) that no live worker takes."""
    from broker.reports.summary import live_backends, workers

    live = live_backends(workers(client, keys))
    return {m: n for m, n in sorted(waiting.items()) if n and m not in live}


def _reuse(client: Any, keys: Keys, args: argparse.Namespace):
    """`--reuse BASE`: the base run must exist; each machine's backend is its live workers' one."""
    from broker.coordinator import Reuse, require_run
    from broker.reports.summary import live_backends, workers

    if args.reuse == args.run_id:
        raise InputError("--reuse", "a run cannot reuse its own results")
    require_run(client, keys, args.reuse)
    live = live_backends(workers(client, keys))
    return Reuse(args.reuse, {m: next(iter(b)) for m, b in live.items() if len(b) == 1})


def cmd_enqueue(args: argparse.Namespace) -> int:
    from broker.coordinator import plan, publish
    from broker.lifecycle import expire_due

    selection = _selection(args)
    if not os.path.exists(args.store):
        raise InputError(args.store, "no such master store (pass --store, or set SWEEPCTL_STORE)")
    client, keys, url = _connect(args)
    reuse = _reuse(client, keys, args) if args.reuse else None
    started = time.perf_counter()
    expire_due(client, keys)
    the_plan = plan(args.store, selection, client, keys, args.run_id, dry_run=args.dry_run)
    if args.dry_run:
        summary = {**the_plan.as_dict(), "dry_run": True}
        queued = {m: c.get("queued", 0) for m, c in the_plan.per_machine.items()}
    else:
        from broker.app import make_app

        summary = publish(make_app(url, keys), client, keys, the_plan, args.chunk, args.expires, reuse)
        queued = summary["queued"]
    summary["no_live_worker"] = _no_worker(client, keys, queued)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    summary["phases"] = the_plan.seconds
    for machine, count in summary["no_live_worker"].items():
        when = "" if args.expires is None else f", or end EXPIRED after {args.expires:g} s"
        print(
            f"sweepctl: warning: no live {machine} worker: {count} vectors wait until one starts{when} "
            f"(sweepctl up --machines {machine}, or sweepctl worker --machine {machine})",
            file=sys.stderr,
        )
    if args.json:
        _print_json(summary)
        return 0
    verb = "would enqueue" if args.dry_run else "enqueued"
    print(f"run {summary['run_id']}: {verb} {len(the_plan.expansion.vectors)} vectors ({selection.suite})")
    for machine, counts in summary["per_machine"].items():
        parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        print(f"  {machine:<8} {parts}")
    if the_plan.over_cap is not None:
        print(f"  above the all_cases cap of {selection.cap:,}: enqueue it with --max-vectors {the_plan.over_cap}")
    if not args.dry_run:
        if summary.get("took_over_lock_of"):
            owner = summary["took_over_lock_of"]
            print(f"  took over the lock of an enqueue that died (pid {owner['pid']} on {owner['host']})")
        if summary["already_in_run"]:
            print(f"  {summary['already_in_run']} vectors were already in this run: not added again")
        if summary["requeued"]:
            print(f"  {summary['requeued']} vectors an interrupted enqueue stored and never queued: handled now")
        if reuse is not None:
            reused = ", ".join(f"{m} {n}" for m, n in summary["reused"].items()) or "none"
            print(f"  REUSED from run {reuse.base} (passed there, not run again): {reused}")
            for machine, why in summary["reuse_skipped"].items():
                print(f"  {machine}: nothing reused: {why}")
        queued, run_id = sum(summary["queued"].values()), summary["run_id"]
        print(f"  {queued} vectors queued in {summary['chunks']} chunks; follow with: sweepctl watch {run_id}")
    return 0


# --- workers -----------------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.daemon import run_worker

    machine, devices, name = worker_target(args)
    url = embedded.resolve_url(args.redis)
    embedded.connect(url)
    prefix = args.prefix or default_prefix()
    name = name or f"{machine}-{args.backend}-{os.getpid()}@{socket.gethostname()}"
    return run_worker(url, Keys(prefix), machine, devices, args.backend, name, events=args.events)


def worker_target(args: argparse.Namespace) -> tuple[str, list[int], str | None]:
    """The machine type, device ids and name (None: the default) that `worker`'s flags ask for;
    `--instance MACHINE[:DEVICES]` is how a systemd template instance (sweepctl-worker@galaxy:0-31)
    says both, and names the worker after itself."""
    from sweeps.profiles import get_profile

    machine, device_set, name = args.machine, args.devices, args.name
    if args.instance:
        if machine or device_set:
            raise InputError(f"--instance {args.instance}", "give --instance or --machine/--devices, not both")
        machine, colon, device_set = args.instance.partition(":")
        if colon and not device_set:
            raise InputError(f"--instance {args.instance!r}", "expected MACHINE or MACHINE:DEVICES, e.g. galaxy:0-31")
        name = name or f"{args.instance}@{socket.gethostname()}"
    elif not machine:
        raise InputError("sweepctl worker", "--machine (or --instance MACHINE:DEVICES) is required")
    profile = get_profile(machine)
    if not device_set:
        return profile.name, list(range(profile.pcie_devices)), name
    devices = device_ids(device_set)
    if len(devices) != profile.pcie_devices:  # the executor opens the machine's whole mesh
        n, each = profile.pcie_devices, profile.chips_per_pcie_device
        raise InputError(f"devices {device_set}", f"a {profile.name} is {n} PCIe device{'s' * (n > 1)} of {each} "
                         f"chip{'s' * (each > 1)} (TT_VISIBLE_DEVICES selects PCIe devices, not chips): give {n} "
                         f"id{'s' * (n > 1)}, e.g. {'0' if n == 1 else f'0-{n - 1}'}")  # fmt: skip
    return profile.name, devices, name


def device_ids(text: str) -> list[int]:
    """A device set as ids: `0,1`, `0-31`, `0-3,8-11`; each id once."""
    ids: list[int] = []
    for part in text.split(","):
        first, dash, last = part.partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise InputError(f"devices {text}", f"{part!r} is not a device id or range (e.g. 0,1 or 0-31)") from None
        if low < 0 or high < low:
            raise InputError(f"devices {text}", f"{part!r} is not a device id or range (e.g. 0,1 or 0-31)")
        ids += range(low, high + 1)
    if len(set(ids)) != len(ids):
        raise InputError(f"devices {text}", "names a device twice")
    return ids


def cmd_up(args: argparse.Namespace) -> int:
    from sweeps.profiles import PROFILES, get_profile

    machines = [get_profile(m).name for m in args.machines.split(",")] if args.machines else list(PROFILES)
    state, client = embedded.up(machines, args.workers, args.prefix or default_prefix(), events=args.events)
    ready = []
    if state["started"] and not args.no_wait:
        ready = embedded.wait_for_workers(client, Keys(state["prefix"]), state["started"])
    if args.json:
        _print_json({**state, "ready": ready})
        return 0
    again = " (it had died: restarted on its port, its data loaded)" if state["redis_restarted"] else ""
    print(f"redis {state['url']}{again} (state in {embedded.home()})")
    for worker in state["workers"]:
        print(f"  worker {worker['name']} pid {worker['pid']}")
    if state["started"] and not args.no_wait:
        print(f"{len(ready)} of {len(state['started'])} new workers opened their emulated devices")
    return 0 if args.no_wait or len(ready) == len(state["started"]) else 1


def cmd_down(args: argparse.Namespace) -> int:
    result = embedded.down()
    if args.json:
        _print_json(result)
    elif not result["state"]:
        print(f"nothing to stop: `sweepctl up` started nothing in {embedded.home()}")
    elif result["redis"] is None and not result["stopped"]:
        print("nothing was running any more: the state of the last `sweepctl up` is removed")
    else:
        redis = f"the redis-server at {result['redis']}" if result["redis"] else "no redis-server (it was not running)"
        print(f"stopped {len(result['stopped'])} workers and {redis}")
    if result["left"]:
        pids = ", ".join(map(str, result["left"]))
        print(f"sweepctl: pids {pids} did not stop; state kept in {embedded.home()}", file=sys.stderr)
        return 1
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    from broker.cli.display import workers_table
    from broker.reports.summary import workers

    client, keys, _ = _connect(args)
    if args.release:
        if not client.exists(keys.worker(args.release)):
            raise InputError(f"--release {args.release}", "no such worker (see `sweepctl workers`)")
        client.hset(keys.worker(args.release), "release", "1")
        print(f"{args.release}: release requested; it resets and health-checks its devices, then consumes again")
        return 0
    rows = workers(client, keys)
    if args.json:
        _print_json(rows)
    else:
        print("\n".join(workers_table(rows)))
    return 0


# --- reading runs ------------------------------------------------------------------------------


def cmd_runs(args: argparse.Namespace) -> int:
    from broker.lifecycle import expire_due
    from broker.reports.summary import progress

    client, keys, _ = _connect(args)
    expire_due(client, keys)
    ids = [r.decode() for r in client.zrevrange(keys.runs(), 0, args.limit - 1)]
    rows = [progress(client, keys, run_id) for run_id in ids]
    if args.json:
        _print_json([{k: r[k] for k in ("run_id", "total", "done", "counts", "complete")} for r in rows])
        return 0
    for r in rows:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["meta"]["created"]))
        print(f"{r['run_id']}  {created}  {r['meta']['selection']['suite']:<12} {r['done']}/{r['total']}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from broker.lifecycle import cancel

    client, keys, _ = _connect(args)
    result = cancel(client, keys, args.run)
    if args.json:
        _print_json(result)
    else:
        print(
            f"run {args.run} canceled: {result['canceled']} vectors CANCELED before running, "
            f"{result['running']} running now (their workers kill and book them), "
            f"{result['already_final']} already final"
        )
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from broker.app import make_app
    from broker.lifecycle import retry

    client, keys, url = _connect(args)
    result = retry(make_app(url, keys), client, keys, args.run, [s.upper() for s in args.status])
    if args.json:
        _print_json(result)
    else:
        where = ", ".join(f"{m} {n}" for m, n in result["per_machine"].items()) or "nothing to retry"
        print(f"run {args.run}: {result['retried']} vectors get a new attempt ({where}); old records kept")
        if result["requeued"]:
            print(f"  {result['requeued']} vectors a retry cut short had left unqueued: queued now")
    return 0


def _progress(client: Any, keys: Keys, run_id: str) -> tuple[dict[str, Any], int, dict[str, int]]:
    """A run's progress, its live workers, and the machine types whose vectors wait with no live worker."""
    from broker.reports.summary import LIVE, progress, workers

    prog = progress(client, keys, run_id)
    rows = workers(client, keys)
    live = {r["machine"] for r in rows if r["health"] in LIVE}
    no_worker = {m: n for m, n in prog["waiting"].items() if m not in live}
    return prog, sum(1 for r in rows if r["health"] == "GOOD"), no_worker


def cmd_status(args: argparse.Namespace) -> int:
    from broker.cli.display import progress_line
    from broker.lifecycle import expire_due

    client, keys, _ = _connect(args)
    expire_due(client, keys)
    prog, live, no_worker = _progress(client, keys, _run_id(args, client, keys))
    if args.json:
        _print_json({**prog, "live_workers": live, "no_live_worker": no_worker})
    else:
        print(f"run {prog['run_id']}: " + progress_line(prog, live, no_worker=no_worker))
    return 0


EXPIRE_EVERY = 5.0  # s between a watch's bookings of runs past their --expires that still have running vectors


def watch(client: Any, keys: Keys, run_id: str, interval: float = 0.5, timeout: float | None = None) -> dict:
    """Until the run is complete (or the timeout): a redrawn line on a terminal, a line per change
    in a log. Runs past their --expires are booked EXPIRED on the way, worker or not."""
    from broker.cli.display import ProgressBar, progress_line
    from broker.lifecycle import expire_due

    bar = ProgressBar()
    deadline = time.monotonic() + timeout if timeout else None
    next_expiry = 0.0
    while True:
        if time.monotonic() >= next_expiry:  # nothing due costs one ZRANGEBYSCORE
            next_expiry = time.monotonic() + (EXPIRE_EVERY if expire_due(client, keys) else 0.0)
        prog, live, no_worker = _progress(client, keys, run_id)
        line = progress_line(prog, live, no_worker=no_worker)
        state = (prog["done"], prog["total"], prog["counts"], live, no_worker, prog["enqueue"])
        if prog["complete"] or (deadline and time.monotonic() > deadline):
            bar.show(line, final=True)
            return prog
        bar.show(line, state=state)
        time.sleep(interval)


def cmd_watch(args: argparse.Namespace) -> int:
    client, keys, _ = _connect(args)
    prog = watch(client, keys, _run_id(args, client, keys), timeout=args.timeout)
    return 0 if prog["complete"] else 1


def _write_output(path: str, text: str) -> None:
    from tracer.store import atomic_write

    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InputError("--output", f"directory {directory} does not exist")
    atomic_write(path, text.encode())


def cmd_report(args: argparse.Namespace) -> int:
    """Exit 1: executed failures; with --expectations, unexpected failures; with --compare, a regression.
    Any ERROR (sweepctl's own failure) exits 1 whatever the options: no expectation or base hides it."""
    from broker.cli import display
    from broker.lifecycle import expire_due
    from broker.reports.summary import build, by_model
    from sweeps import status

    client, keys, _ = _connect(args)
    run_id = _run_id(args, client, keys)
    expire_due(client, keys)
    expectations = None
    if args.expectations:
        from broker.reports.expectations import load

        expectations = load(args.expectations)  # a bad file fails before anything is read
    fmt = "json" if args.json else args.format
    report = build(client, keys, run_id, failures_limit=args.limit)
    failed = bool(report["failed"])
    rows = None
    if expectations is not None or args.by == "model" or fmt in ("csv", "junit", "html", "optest"):
        from broker.reports.rows import rows as read_rows

        rows = read_rows(client, keys, run_id)
    if expectations is not None:
        from broker.reports.expectations import judge_rows

        report["expectations"] = judge_rows(expectations, rows)
        failed = report["expectations"]["regressed"]
    if args.by == "model":
        report["models"] = by_model(rows, args.model)
    if args.compare:
        from broker.reports.compare import Tolerances, compare

        tol = Tolerances(args.pcc_tolerance, args.e2e_tolerance, perf_regresses=not args.ignore_perf)
        report["compare"] = compare(client, keys, run_id, args.compare, tol)
        failed = report["compare"]["regressed"]
    failed = failed or bool(report["counts"].get(status.ERROR))
    if fmt == "text":
        if args.compare:
            lines = display.compare_lines(report["compare"])
        else:
            lines = display.report_lines(report, by=args.by)
            if args.by == "model":
                lines += display.model_lines(report["models"])
            lines += display.bucket_lines(report["buckets"])
            if expectations is not None:
                lines += display.expectation_lines(report["expectations"])
        text = "\n".join(lines) + "\n"
    elif fmt == "json":
        text = json.dumps(report, indent=2, default=str) + "\n"
    else:
        text = _export(fmt, report, rows, expectations)
    output = args.output
    if output and fmt == "optest" and os.path.isdir(output):
        from broker.reports.export import optest_filename

        output = os.path.join(output, optest_filename(report))
    if output:
        _write_output(output, text)
        print(f"wrote {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 1 if failed else 0


def _export(fmt: str, report: dict[str, Any], rows: list[Any], expectations: Any) -> str:
    from broker.reports import export

    if fmt == "csv":
        return export.to_csv(rows, expectations)
    if fmt == "junit":
        return export.to_junit(report["run_id"], rows, expectations)
    if fmt == "optest":
        return export.to_optest(report, rows, expectations)
    from broker.reports.htmlpage import render

    return render(report, rows)


def cmd_expectations_check(args: argparse.Namespace) -> int:
    from broker.reports.expectations import check, load
    from tracer.store import MasterStore

    expectations = load(args.file)
    store = MasterStore.load(args.store, missing_ok=False) if args.store else None
    problems = check(expectations, store)
    if args.json:
        _print_json({"file": args.file, "entries": len(expectations.entries), "problems": problems})
    else:
        against = f" against {args.store}" if store is not None else " (no --store: hashes and models not checked)"
        print(f"{args.file}: {len(expectations.entries)} entries, {len(problems)} problems{against}")
        for line in problems:
            print(f"  {line}")
    return 1 if problems else 0


# --- demo --------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole job on the sample store: up, enqueue, a live progress bar, the report."""
    from broker.app import make_app
    from broker.cli.display import bucket_lines, report_lines
    from broker.coordinator import plan, publish
    from broker.reports.summary import build
    from sweeps.suites import Selection

    explicit = args.redis or os.environ.get("SWEEPCTL_REDIS_URL")
    owned = not explicit and embedded.read_state() is None  # we start it, so we stop it
    try:
        if explicit:
            client, keys, url = _connect(args)
        else:
            machines = ["n300", "galaxy"]
            state, client = embedded.up(machines, 1, default_prefix())
            keys, url = Keys(state["prefix"]), state["url"]
            print(f"redis {url}; starting emulated workers for {', '.join(machines)}")
            ready = embedded.wait_for_workers(client, keys, state["started"])
            if len(ready) < len(state["started"]):
                print(f"sweepctl: only {len(ready)} of {len(state['started'])} workers opened", file=sys.stderr)
        the_plan = plan(args.store, Selection(suite="model_traced"), client, keys, None)
        summary = publish(make_app(url, keys), client, keys, the_plan)
        print(f"run {summary['run_id']}: {summary['added']} vectors from {args.store}")
        for machine, counts in summary["per_machine"].items():
            print(f"  {machine:<8} " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        watch(client, keys, summary["run_id"], timeout=args.timeout)
        report = build(client, keys, summary["run_id"])
        print()
        print("\n".join(report_lines(report) + bucket_lines(report["buckets"])))
        if not owned or args.keep:  # the Redis stays up: say what to look at next
            print(f"\nmore: sweepctl report {summary['run_id']} --format html -o report.html  (--by model, --compare)")
        return 0 if report["complete"] else 1
    finally:
        if owned and not args.keep:
            embedded.down()
