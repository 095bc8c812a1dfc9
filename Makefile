# The two commands of the README: `make run` and `make test`.  Both build
# .venv from scratch on a fresh machine (Python deps from PyPI, the node
# WAMP clients used by the end-to-end tests from npm; `make test` also
# installs Debian's chromium for the browser tests when it runs as root).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-installed
NODE   := tests/node
NODEOK := $(NODE)/node_modules/.installed

.PHONY: run test install browser redis bench bench-crossbar clean

$(DEPS): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q '.[test]'
	touch $(DEPS)

# The package itself is reinstalled on every run so that the virtualenv
# holds a regular install (twistd finds the plugin there, not only in the tree).
install: $(DEPS)
	$(PY) -m pip install -q --no-deps --force-reinstall .

$(NODEOK): $(NODE)/package.json $(NODE)/package-lock.json
	cd $(NODE) && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODEOK)

# Headless Chromium for tests/test_browser.py.  Without root or apt the
# browser tests skip (and fail under CI=true, where a skip would hide them).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; } || \
	    echo "note: could not install chromium: the browser tests cannot run"; \
	  else echo "note: chromium is not installed: the browser tests cannot run"; fi; }

# Debian's redis-server for the cluster tests (each test starts its own on a
# free port); without root or apt they skip (and fail under CI=true).
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's redis-server for the cluster tests"; \
	    apt-get install -y -q --no-install-recommends redis-server >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends redis-server >/dev/null 2>&1; } || \
	    echo "note: could not install redis-server: the cluster tests cannot run"; \
	  else echo "note: redis-server is not installed: the cluster tests cannot run"; fi; }

run: install
	$(VENV)/bin/twistd -n oro-sync --listen tcp:8080:interface=127.0.0.1:backlog=4096

test: install $(NODEOK) browser redis
	PYTHONPATH=$(CURDIR) $(VENV)/bin/trial --temp-directory=/tmp/oro-sync-trial-$$$$ tests

bench: install
	$(PY) -m pip install -q '.[bench]'
	$(PY) bench/run.py

# The Crossbar.io peer lives in a virtualenv of its own (about 4 minutes to build).
bench-crossbar:
	test -x bench/.venv-crossbar/bin/crossbar || ($(PYTHON) -m venv bench/.venv-crossbar && bench/.venv-crossbar/bin/pip install -q crossbar)

clean:
	rm -rf $(VENV) build *.egg-info $(NODE)/node_modules _trial_temp*
