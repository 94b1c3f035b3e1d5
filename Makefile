# The two commands of the README: `make run` and `make test`.
# Prefer the system Python: session processes run as unprivileged uids and
# must be able to read the interpreter's standard library.
PYTHON ?= $(shell test -x /usr/bin/python3 && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo /usr/bin/python3 || echo python3)
VENV   ?= .venv
DATA   ?= $(or $(SALVUS_DATA),$(CURDIR)/salvus-data)
CTL     = $(VENV)/bin/salvusctl --data $(DATA)

.PHONY: run stop test bench lint install system-packages frontend-libs assets dist clean

## run: install everything, initialize the data folder if needed, start, print the URL
run: install
	@$(CTL) init
	@$(CTL) start

stop:
	@$(CTL) stop

## test: install everything and run the linter and the whole test suite
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

install: system-packages $(VENV)/.installed

system-packages:
	@PYTHON=$(PYTHON) scripts/install-system-packages

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,sage]'
	@touch $@

install: frontend-libs assets

frontend-libs:
	@scripts/fetch-frontend-libs

# Static files compressed once, at the best levels, for every frontend to
# serve as they are (web/assets.py); a file changed later is compressed by
# the frontend on its first request instead.
assets: frontend-libs $(VENV)/.installed
	@$(VENV)/bin/python -c 'from web import assets; assets.main()'

## bench: the benchmarks, side by side with Jupyter (prints ratios, writes bench/results/)
bench: install
	$(VENV)/bin/pip install -q -e '.[test,sage,bench]'
	$(VENV)/bin/python bench/worker_bench.py
	$(VENV)/bin/python bench/web_bench.py
	$(VENV)/bin/python bench/chaos_bench.py
	$(VENV)/bin/python bench/bus_bench.py
	$(VENV)/bin/python bench/jupyter_restart.py
	$(VENV)/bin/python bench/sage_fidelity.py
	$(VENV)/bin/python bench/first_load_bench.py
	$(VENV)/bin/python bench/log_bench.py

## dist: the tarball packagers ship (dist/salvus-VERSION.tar.gz)
dist: install
	$(VENV)/bin/python -m build --sdist --outdir dist .

clean:
	rm -rf dist build *.egg-info .pytest_cache .ruff_cache
