"""`python -m broker.cli` is `sweepctl` (workers and tests start it so, with the same interpreter)."""

import sys

from broker.cli import main

sys.exit(main())
