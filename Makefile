# The verbs a newcomer needs. `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test migrate lint audit bench loadtest install clean backup restore

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

# mypy imports the settings (django-stubs), which refuse the development secret key unless DEBUG is on.
lint: install
	$(VENV)/bin/ruff check .
	DEBUG=1 $(VENV)/bin/mypy .

# Exit 3: the vulnerability database was unreachable, nothing was audited (AUDIT_FLAGS=--unreachable-ok: 0).
audit: install
	$(PY) scripts/audit.py $(AUDIT_FLAGS)

bench: install
	$(PY) scripts/bench_tenancy.py
	$(PY) scripts/bench_provisioning.py
	$(PY) scripts/bench_auth.py
	$(PY) scripts/bench_patients.py
	$(PY) scripts/bench_messaging.py
	$(PY) scripts/bench_dashboard.py
	$(PY) scripts/bench_sync_rate.py
	$(PY) scripts/bench_backend_memory.py

# gunicorn (production settings) under wrk: the signed-in patient list against a bare comparison view.
# Needs wrk (apt-get install wrk); LOADTEST_ARGS=--through-pgbouncer puts PgBouncer (session) in between.
loadtest: install
	$(PY) scripts/loadtest.py $(LOADTEST_ARGS)

clean:
	-test -x $(PY) && $(PY) scripts/devservices.py down
	-test -x $(PY) && rm -rf $$($(PY) scripts/devservices.py where)
	rm -rf $(VENV) .devdata
