# `make demo` and `make test` set themselves up: a .venv with the CPU torch build installed first (so pip never
# pulls CUDA wheels), then this package. Override the torch requirement with e.g. `make test TORCH='torch==2.9.1'`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
RUN ?= runs/demo
STAMP := $(VENV)/.vipo-installed

.PHONY: demo test setup clean-demo

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q "$(TORCH)"
	$(VENV)/bin/python -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vipo run --config configs/world.yaml --out $(RUN)
	@echo "report: $(RUN)/report.html (open it in a browser; also report.md and report*.png)"

# the suite runs on TEST_WORKERS processes (pytest-xdist; 2 = the cores of the reference machine); 0 = one process
TEST_WORKERS ?= 2
test: $(STAMP)
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25

clean-demo:
	rm -rf $(RUN)
