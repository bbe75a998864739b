"""Benchmark (run with `make bench`): `sweepctl store import` of synthetic stores of 25k, 50k and
100k configs, each in a fresh process. Prints configs/s (budget: 20,000/s), the ratio to a plain
`json.load` of the same file measured in the same run, and peak RSS per config (linear = flat)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import write_json
from tests.synth import synthetic_store

BUDGET = 20_000

_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    from broker.cli import main
    src, dst, mode = sys.argv[1:4]
    start = time.perf_counter()
    if mode == "json":
        json.load(open(src))
    else:
        main(["store", "import", src, "--into", dst, "--json"])
    elapsed = time.perf_counter() - start
    print(json.dumps({"seconds": elapsed, "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}),
          file=sys.stderr)
    """
)


def _run(src, dst, mode):
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(src), str(dst), mode], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.mark.bench
def test_bench_store_import(tmp_path):
    rows = []
    for n in (25_000, 50_000, 100_000):
        src = write_json(tmp_path / f"store_{n}.json", synthetic_store(n))
        baseline = _run(src, tmp_path / "unused.json", "json")
        ours = _run(src, tmp_path / f"into_{n}.json", "import")
        rate = n / ours["seconds"]
        rows.append((n, rate, ours["seconds"] / baseline["seconds"], ours["rss_kb"] / n))
        print(
            f"\nstore import {n:>7} configs: {ours['seconds']:.2f} s = {rate:,.0f} configs/s "
            f"({rate / BUDGET:.2f}x the 20,000/s budget; {ours['seconds'] / baseline['seconds']:.2f}x a bare "
            f"json.load of the file, {baseline['seconds']:.2f} s); peak RSS {ours['rss_kb'] / 1024:.0f} MiB "
            f"= {ours['rss_kb'] / n:.1f} KiB/config"
        )
    assert rows[-1][1] >= BUDGET
    per_config = [r[3] for r in rows]
    print(f"peak KiB per config at 25k/50k/100k: {per_config[0]:.1f} / {per_config[1]:.1f} / {per_config[2]:.1f}")
    assert per_config[-1] <= per_config[0] * 1.3  # memory grows linearly, not faster
