# sb3-distill: make demo | make test | make docs | make bench | make lint | make test-min
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch first, so that the project's `torch>=2.5` is already met: override for another build,
# e.g. make TORCH="torch --index-url https://download.pytorch.org/whl/cpu" test
TORCH ?= torch==2.13.0
PIP_QUIET ?= -q

.PHONY: demo test test-min lint docs bench install clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(PIP_QUIET) $(TORCH)
	$(PIP) install $(PIP_QUIET) -e ".[tests,docs]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) examples/realtime_ppo_cartpole.py

lint: $(VENV)/.installed
	$(PY) -m ruff check sb3_distill tests examples benchmarks docs
	$(PY) -m ruff format --check sb3_distill tests examples benchmarks docs
	$(PY) -m mypy

# The documentation, warnings as errors (part of `make test`: broken docs fail CI).
docs: $(VENV)/.installed
	rm -rf docs/_build
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

# lint (mypy) and docs (sphinx) are single-threaded: they run side by side on the two cores.
test: $(VENV)/.installed
	$(MAKE) --no-print-directory -j2 lint docs
	$(PY) -m pytest -n 2 --dist worksteal tests

# The suite against the lowest declared versions (tests/requirements-min.txt), in its own environment.
test-min:
	test -x .venv-min/bin/python || $(PYTHON) -m venv .venv-min
	.venv-min/bin/python -m pip install $(PIP_QUIET) $(TORCH)
	.venv-min/bin/python -m pip install $(PIP_QUIET) -r tests/requirements-min.txt tensorboard tqdm rich
	.venv-min/bin/python -m pip install $(PIP_QUIET) --no-deps -e .
	.venv-min/bin/python -m pytest -n 2 tests

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PIP) install $(PIP_QUIET) -e ".[tests,bench]"
	touch $@

# Slow tests and benchmarks: not part of CI. pytest's exit code 5 means no slow test is selected.
bench: $(VENV)/.installed-bench
	$(PY) -m pytest -m slow tests || test $$? -eq 5
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/packing.py
	$(PY) benchmarks/offline_vs_realtime.py
	$(PY) benchmarks/students_vs_teacher.py --quick
	$(PY) benchmarks/datafree.py --quick

clean:
	rm -rf $(VENV) .venv-min build *.egg-info .pytest_cache .mypy_cache .ruff_cache docs/_build
