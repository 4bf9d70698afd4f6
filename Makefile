# `make demo` and `make test` set themselves up: a .venv with the CPU torch build installed first (so pip never
# pulls CUDA wheels), then this package. Override the torch requirement with e.g. `make test TORCH='torch==2.9.1'`.
# The installed files are compiled to bytecode on every core at once (compileall -j 0) rather than one by one inside
# pip (the set-up 105 -> 72 s on 2 cores); they must be compiled at install: where PYTHONDONTWRITEBYTECODE is set
# nothing compiled at import is kept. A file that does not compile (a few vendored ones) is only imported slower.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
RUN ?= runs/demo
STAMP := $(VENV)/.vipo-installed

.PHONY: demo test setup clean-demo

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --no-compile "$(TORCH)"
	$(VENV)/bin/python -m pip install -q --no-compile -e ".[test]"
	$(VENV)/bin/python -m compileall -qq -j 0 $(VENV)/lib || true
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vipo run --config configs/world.yaml --out $(RUN)
	@echo "report: $(RUN)/report.html (open it in a browser; also report.md and report*.png)"

# the suite runs on TEST_WORKERS processes (pytest-xdist; 2 = the cores of the reference machine); 0 = one process
TEST_WORKERS ?= 2
test: $(STAMP)
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

clean-demo:
	rm -rf $(RUN)
