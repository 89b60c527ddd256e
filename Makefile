# The verbs a newcomer needs. `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test migrate lint bench install clean backup restore

$(VENV)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit("RoutIQ needs Python 3.11+") if sys.version_info < (3, 11) else None'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) scripts/dev.py run

test: install
	$(PY) scripts/dev.py test

# Public schema, then every organization's schema in parallel (MIGRATION_WORKERS), as the owner role.
migrate: install
	$(PY) scripts/dev.py migrate

backup: install
	$(PY) scripts/dev.py backup $(FILE)

restore: install
	$(PY) scripts/dev.py restore $(FILE) $(INTO)

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) scripts/bench_tenancy.py
	$(PY) scripts/bench_provisioning.py
	$(PY) scripts/bench_auth.py
	$(PY) scripts/bench_patients.py
	$(PY) scripts/bench_messaging.py
	$(PY) scripts/bench_dashboard.py

clean:
	-test -x $(PY) && $(PY) scripts/devservices.py down
	-test -x $(PY) && rm -rf $$($(PY) scripts/devservices.py where)
	rm -rf $(VENV) .devdata
