# Two entry points for a newcomer: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
# The pinned CPU wheel is installed before anything else so that CPU machines never pull CUDA builds.
# Override on a GPU machine, e.g. `make install TORCH_SPEC="torch==2.13.0 --index-url ..."`.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
DEMO_OUT ?= demo-report

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/blindspot demo --out $(DEMO_OUT) --overwrite

# -rs: skipped tests are listed with their reason (e.g. the browser test where Chromium is absent).
test: install
	$(BIN)/python -m pytest -n 2 -rs

bench: install
	$(BIN)/python benchmarks/bench_pitfalls.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/bench_bootstrap.py
	$(BIN)/python benchmarks/bench_audit.py
	$(BIN)/python benchmarks/bench_volumes.py
	$(BIN)/python benchmarks/bench_cluster.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
