# The README's two commands, each doing all set-up on a fresh machine:
#   make demo   - create .venv if needed, install, run the main job (the audit) on the embedded default
#   make test   - same set-up, then lint, type check and the whole test suite (CI)
#   make test-fast - the test suite without the tests marked slow (pytest -m "not slow")
# Installs pin torch through constraints.txt (CPU build, no CUDA wheels) and take every extra
# (all) and the test tools (dev).

VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
SUDO    := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
FASHION := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
DEMO_OUT ?= out/demo
# pytest workers (pytest-xdist; CI has 2 cores): PYTEST_WORKERS=0 runs the suite in one process.
PYTEST_WORKERS ?= 2
PYTEST  := $(VENV)/bin/pytest -q -n $(PYTEST_WORKERS) --dist worksteal

.PHONY: install demo test test-fast lint typecheck pytest bench fashion-mnist clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP)

# Without root, sudo or apt the tests that read it are skipped (each says so, naming the
# package); under CI (CI set) a failed install stops here, so CI never runs without it.
$(FASHION):
	@{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; } || \
	{ if [ -n "$$CI" ]; then echo "make: could not install dataset-fashion-mnist" >&2; exit 1; fi; \
	  echo "make: Debian's dataset-fashion-mnist could not be installed (needs root or sudo and" \
	       "apt); the tests that read it will be skipped" >&2; }

fashion-mnist: $(FASHION)

# The main job: certify the first 100 digits and attack every certificate; the report goes to
# $(DEMO_OUT) (report.md, report.json, PNGs). Exits 1 if the certificates are violated.
demo: install
	$(VENV)/bin/rs-plugin audit --model demo --data digits --sigma 0.25 -n 10000 --limit 100 \
		--out $(DEMO_OUT)

lint: install
	$(VENV)/bin/ruff check rs_plugin adapters tests examples
	$(VENV)/bin/ruff format --check rs_plugin adapters tests examples

typecheck: install
	$(VENV)/bin/mypy rs_plugin adapters tests examples

pytest: install fashion-mnist
	$(PYTEST) --durations=25

test: lint typecheck pytest

test-fast: install fashion-mnist
	$(PYTEST) -m "not slow"

bench: install
	$(VENV)/bin/rs-plugin bench

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache *.egg-info
