# The two commands, from a fresh clone (Python 3.11 or newer as python3):
#   make demo   makes .venv if needed, installs diffbfr_jax (with its photos extra) with the
#               versions in constraints.txt and the FID Inception weights, and runs the demo job into runs/demo
#   make test   the same environment with the test and compile extras (pytest, torch; the TPU
#               and GPU compilers of docs/compile.md), then the tests
# Other set-ups (your own environment, jax[cuda12], jax[tpu]): docs/setup.md.
PYTHON ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/python -m pip
DEMO_ARGS ?=

.PHONY: demo test

$(VENV)/.installed: pyproject.toml constraints.txt requirements-no-deps.txt
	[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt -e ".[photos]"
	$(PIP) install -c constraints.txt --no-deps -r requirements-no-deps.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -c constraints.txt -e ".[test,compile,photos]"
	touch $@

# JAX_PLATFORMS=cpu unless set: after `make test` the environment has the compile extra, whose
# CUDA plugin and libtpu JAX would otherwise also try to start (docs/compile.md).
demo: $(VENV)/.installed
	JAX_PLATFORMS=$${JAX_PLATFORMS:-cpu} $(VENV)/bin/python -m diffbfr_jax.main --config=configs/demo.py --workdir=runs/demo $(DEMO_ARGS)

test: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest
