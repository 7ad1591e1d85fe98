BENCH_PYTHON ?= python3
BENCH_ARGS ?=

.PHONY: bench
bench:  ## benchmark ocisquash against oci-squash, cp and raw codec work (bench/README.md)
	$(BENCH_PYTHON) bench/run.py $(BENCH_ARGS)
