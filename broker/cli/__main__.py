"""`python -m broker.cli` is `sweepctl` (workers and tests start it so, with the same interpreter)."""

from broker.cli import run

run()
