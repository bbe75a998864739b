# The two commands a fresh machine needs: `make demo` (the main job) and `make test`.
VENV := .venv/bin

.PHONY: setup demo test test-all bench lint

setup:
	@scripts/setup.sh

SAMPLE := sweeps/data/sample_master.json

# Until the runtime lands, the main job summarises the sample master store shipped in the project.
demo: setup
	$(VENV)/sweepctl store stats $(SAMPLE)
	$(VENV)/sweepctl store verify $(SAMPLE)
	$(VENV)/sweepctl store validate $(SAMPLE)
	$(VENV)/sweepctl configs ttnn.add --store $(SAMPLE)

test: setup
	$(VENV)/ruff check .
	$(VENV)/python -m pytest -q -x

bench: setup
	$(VENV)/python -m pytest -q -s -m bench tests/benchmarks

lint: setup
	$(VENV)/ruff check .
