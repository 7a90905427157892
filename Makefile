# The two commands at the top of the README. Both set up .venv first (scripts/setup.sh: the CPU
# build of torch on machines without a GPU, then tunesmith), which a second call only checks.
PYTHON_VENV := .venv/bin/python

.PHONY: setup demo test test-slow test-browser bench lint docs

setup:
	@./scripts/setup.sh

demo: setup
	@$(PYTHON_VENV) -m tunesmith.cli demo

test: setup
	@$(PYTHON_VENV) -m pytest

test-slow: setup
	@$(PYTHON_VENV) -m pytest -m slow

# The console in a real headless Chromium: needs `apt-get install chromium chromium-driver` (skips without).
test-browser: setup
	@$(PYTHON_VENV) -m pytest -m browser

# Every benchmark in turn (about 90 minutes on 2 cores); each prints its own table.
bench: setup
	@$(PYTHON_VENV) -m pip install --quiet -e .[bench]
	@$(PYTHON_VENV) benchmarks/train_throughput.py
	@$(PYTHON_VENV) benchmarks/generation_throughput.py
	@$(PYTHON_VENV) benchmarks/data_prep.py
	@$(PYTHON_VENV) benchmarks/preference_memory.py
	@$(PYTHON_VENV) benchmarks/serve_throughput.py

lint: setup
	@$(PYTHON_VENV) -m ruff check src tests benchmarks

# The documentation site (mkdocs.yml) into build/site; strict, so any warning fails the build. The
# reference pages are generated from the code at build time (docs/hooks.py). NO_MKDOCS_2_WARNING
# silences Material's banner about its own end of life, which is not a warning about these docs.
docs: setup
	@$(PYTHON_VENV) -m pip install --quiet -e .[docs]
	@NO_MKDOCS_2_WARNING=1 $(PYTHON_VENV) -m mkdocs build --strict
