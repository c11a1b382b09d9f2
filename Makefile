# The two commands a fresh machine needs (see README.md):
#   make quickstart   set up, then run every capability's demo against an embedded local Hub
#   make test         set up, then run the test suite
#   make bench-smoke  every benchmark's --smoke mode (< 10 min on 2 cores); leaves the tree clean
.PHONY: quickstart test setup lint bench-smoke bench-docs

STAMP := .venv/.hubtools-setup

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

setup: $(STAMP)

quickstart: $(STAMP)
	.venv/bin/hubtools quickstart

test: $(STAMP)
	.venv/bin/python -m pytest -q

lint: $(STAMP)
	.venv/bin/ruff check hubtools tests benchmarks scripts

bench-smoke: $(STAMP)
	bash scripts/bench_smoke.sh

bench-docs: $(STAMP)
	.venv/bin/hubtools bench render
	.venv/bin/hubtools bench docs
