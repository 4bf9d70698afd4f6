# `make demo` and `make test` set themselves up: a .venv with the CPU torch build installed first (so pip never
# pulls CUDA wheels), then this package. Override the torch requirement with e.g. `make test TORCH='torch==2.9.1'`.
# The installed files are compiled to bytecode on every core at once (compileall -j NPROC) rather than one by one
# inside pip (the set-up ~30 s shorter on 2 cores: 105-134 s before, 72-96 s after); they must be compiled at install:
# where PYTHONDONTWRITEBYTECODE is set nothing compiled at import is kept. compileall's exit status is ignored (a few
# installed files are for a newer Python, torch's py312 test helpers, never imported); that torch was compiled is
# checked, since without it every process is much slower.
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
	$(VENV)/bin/python -m compileall -qq -j "$$(nproc 2>/dev/null || echo 2)" $(VENV)/lib || true
	ls $(VENV)/lib/python*/site-packages/torch/__pycache__/__init__.*.pyc > /dev/null
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
