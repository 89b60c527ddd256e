"""Fault schedules for the vendor syncs' property-based tests, and the harness that runs a sync through one.

A *schedule* is a list of faults, each due on one request of a stand-in server (``StubServer.schedule_fault``:
the n-th request from now whose path contains a drawn fragment): a 429 (waited out), a 5xx, a timeout (the
stand-in holds its answer longer than the client's read timeout), a truncated body, a body that is not JSON.
The client is the real one, unpatched; only its timeout is short and its sleeps recorded instead of slept, so
a schedule costs milliseconds. A failed run raises, as it does in a worker; ``run_until_success`` then calls
the sync again, as RQ retries the job, and the sync must resume from its checkpoint.

Each hypothesis example runs inside ``rolled_back()``: the test's database transaction is per test function,
not per example, so every example gets a savepoint of its own and leaves nothing behind. The runs' page
commits are savepoints inside it, which is what a commit is for the rest of the run.

ManyChat has no sync to put through this: ManyChat pushes to us (a flow's External Request, one message per
delivery), and nothing is paged or checkpointed. Its webhook's idempotency is tested with the webhooks.

Used by patients/tests/test_sync_faults.py (Cliniko) and messaging/tests/test_sync_faults.py (Chatwoot).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from django.db import connection, transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from routiq.http import VendorError
from tenants.models import SyncLog, SyncStatus
from tenants.rls.binding import bind_organization

ROOT = Path(__file__).resolve().parents[2]
# The client's (connect, read) timeouts in these tests, and how long a "timeout" fault holds its answer.
CLIENT_TIMEOUT = (2.0, 0.3)
HELD_ANSWER = 0.8
CLIENT_OPTIONS = {"timeout": CLIENT_TIMEOUT, "max_retries": 2, "random": lambda: 0.0}

# hypothesis: the fixtures (organization, database transaction) are the test's; each example undoes its own
# database work (rolled_back) and starts its own stand-in, so sharing them across examples is what we want.
# derandomize: CI draws the same schedules every run, so a red run is reproducible; hypothesis prints the
# failing schedule, shrunk.
FAULT_SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, database=None, report_multiple_bugs=False,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Our names for the faults -> (the stand-in's fault kind, its status, how long it holds the answer).
KINDS = {
    "rate_limit": ("rate_limit", 429, 0.0),  # Retry-After / X-RateLimit-Reset now + 0 or 1 s
    "status": ("status", 503, 0.0),
    "timeout": ("delay", 200, HELD_ANSWER),
    "truncated_json": ("malformed", 200, 0.0),
    "not_json": ("not_json", 200, 0.0),
}


@dataclass(frozen=True)
class Fault:
    kind: str
    at: int  # the n-th request (0-based) from now whose path contains ``path``
    path: str = ""
    status: int = 503
    seconds: float = 0.0

    def schedule_on(self, stub) -> None:
        kind, _, held = KINDS[self.kind]
        stub.schedule_fault(kind, at=self.at, path_contains=self.path, status=self.status,
                            seconds=held or self.seconds)


def faults(paths: tuple[str, ...], *, requests: int = 12) -> st.SearchStrategy[Fault]:
    """One fault on one of the next ``requests`` requests to one of ``paths`` ("" is any path)."""
    return st.one_of(
        st.builds(Fault, kind=st.just("rate_limit"), at=st.integers(0, requests), path=st.sampled_from(paths),
                  seconds=st.sampled_from((0.0, 1.0))),
        st.builds(Fault, kind=st.just("status"), at=st.integers(0, requests), path=st.sampled_from(paths),
                  status=st.sampled_from((500, 502, 503))),
        st.builds(Fault, kind=st.sampled_from(("timeout", "truncated_json", "not_json")),
                  at=st.integers(0, requests), path=st.sampled_from(paths)),
    )


def schedules(paths: tuple[str, ...], *, requests: int = 12, max_faults: int = 8) -> st.SearchStrategy[list[Fault]]:
    return st.lists(faults(paths, requests=requests), max_size=max_faults)


def arm(stub, schedule: list[Fault], *, change: Callable[[], None] | None = None,
        after_page: int = 0) -> Callable[[object], None]:
    """Schedule the faults on the stand-in; return the runs' ``on_page`` hook, which makes ``change`` at the
    vendor once ``after_page`` pages have been written (counted over every run): a change while a run pages
    past it."""
    for fault in schedule:
        fault.schedule_on(stub)
    written = 0

    def on_page(progress) -> None:
        nonlocal written
        written += 1
        if change is not None and written == after_page:
            change()

    return on_page


@contextlib.contextmanager
def rolled_back() -> Iterator[None]:
    """One example's database work, undone at the end (a savepoint in the test's transaction)."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


@dataclass
class Attempts:
    """What ``run_until_success`` saw: the errors of the failed runs and the log of the one that succeeded."""

    errors: list[VendorError]
    log: SyncLog


def run_until_success(run: Callable[[], SyncLog], *, attempts: int) -> Attempts:
    """Call ``run`` as RQ retries a failed job (a vendor error raises out of the run) until one run
    succeeds; at most ``attempts`` runs. Every fault is due once, so a schedule of n faults fails at most n
    runs: more than that is the sync failing on its own."""
    errors: list[VendorError] = []
    for _ in range(attempts):
        try:
            return Attempts(errors, run())
        except VendorError as exc:
            errors.append(exc)
    raise AssertionError(f"no run succeeded in {attempts} attempts: {[str(e) for e in errors]}")


def assert_every_attempt_logged(organization, *, provider: str, resource: str, attempts: Attempts,
                                before: set | frozenset = frozenset()) -> list[SyncLog]:
    """One sync_logs row per run since ``before`` (the ids of older rows): the failed ones failed with an
    error, the last one succeeded. Returns the rows, oldest first."""
    with bind_organization(organization):
        logs = list(SyncLog.objects.filter(provider=provider, resource=resource).exclude(pk__in=before)
                    .order_by("started_at", "pk"))
    assert len(logs) == len(attempts.errors) + 1
    assert [log.status for log in logs] == [SyncStatus.FAILED] * len(attempts.errors) + [SyncStatus.SUCCEEDED]
    assert logs[-1].pk == attempts.log.pk and logs[-1].error == ""
    for log, error in zip(logs, attempts.errors, strict=False):
        assert log.error and log.finished_at is not None
        assert log.error.startswith(type(error).__name__)
    return logs


def log_ids(organization, provider: str) -> set:
    with bind_organization(organization):
        return set(SyncLog.objects.filter(provider=provider).values_list("pk", flat=True))


# -- a worker killed with SIGKILL mid-page ----------------------------------------------------------------
WORKER = """
import importlib, os, sys
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "routiq.settings")
django.setup()
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("SELECT pg_backend_pid()")
    print(cursor.fetchone()[0], flush=True)
module, _, name = sys.argv[1].rpartition(".")
print(getattr(importlib.import_module(module), name)(*sys.argv[2:]), flush=True)
"""


def kill_mid_page(job: str, *args: str, stub, held_request: int) -> None:
    """Run the sync job ``job`` (dotted path) with ``args`` in a process of its own, as an RQ work-horse
    does (the app role, committing each page; the organization's credential must be committed and point at
    ``stub``), hold the stand-in's answer to request number ``held_request`` from now, SIGKILL the process
    while it waits for that page, and return once its database backend is gone, and with it its advisory
    lock."""
    from routiq.testing.browser_portal import DEV_ROLES, database_url

    stub.schedule_fault("delay", at=held_request, seconds=60)
    held = len(stub.requests) + held_request + 1
    env = {**os.environ, "DATABASE_URL": database_url(*DEV_ROLES["app"]), "PYTHONUNBUFFERED": "1",
           "VENDOR_ALLOW_PRIVATE_NETWORKS": "1"}
    worker = subprocess.Popen([sys.executable, "-c", WORKER, job, *args], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert worker.stdout is not None and worker.stderr is not None  # both are pipes
    try:
        backend_pid = int(worker.stdout.readline())
        deadline = time.monotonic() + 30
        while len(stub.requests) < held:
            assert worker.poll() is None, f"the worker ended before the held page:\n{worker.stderr.read()}"
            assert time.monotonic() < deadline, "the worker never asked for the held page"
            time.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(timeout=10) == -signal.SIGKILL
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        worker.stdout.close()
        worker.stderr.close()
    stub.clear_faults()
    deadline = time.monotonic() + 10
    while True:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [backend_pid])
            if cursor.fetchone()[0] == 0:
                return
        assert time.monotonic() < deadline, "the killed worker's backend outlived it"
        time.sleep(0.05)
