# The two quick-start commands:
#   make run    install into .venv, migrate, create the demo agents and login, serve on :8000
#   make test   install the test dependencies (pip, npm, apt) and run the whole suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test venv

venv:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip

run: venv
	$(PY) -m pip install --quiet -e '.[local]'
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	$(PY) manage.py serve 127.0.0.1:8000

test: venv
	$(PY) -m pip install --quiet -e '.[dev]'
	bash tests/prepare_environment.sh
	bash tests/run_suite.sh
