# The two commands a fresh machine needs: `make demo` (the main job) and `make test`.
VENV := .venv/bin

.PHONY: setup demo test test-all bench lint

setup:
	@scripts/setup.sh

# The main job: an embedded Redis and emulated workers run the sample master store end to end,
# with a live progress bar and the report; everything it started is stopped afterwards.
demo: setup
	$(VENV)/sweepctl demo

test: setup
	$(VENV)/ruff check .
	$(VENV)/python -m pytest -q -x --durations=25

bench: setup
	$(VENV)/python -m pytest -q -s -m bench tests/benchmarks

lint: setup
	$(VENV)/ruff check .
