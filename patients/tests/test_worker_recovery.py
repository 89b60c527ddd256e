"""A real RQ worker SIGKILLed mid-sync: its job is retried by the scheduler's tick within two minutes, with the
production heartbeat settings, and the retry resumes from the checkpoint (routiq/worker.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings
from rq.job import Job, JobStatus

from patients.jobs import enqueue_cliniko_sync
from patients.models import Contact
from patients.tests.cliniko_helpers import assert_database_equals_server
from patients.tests.conftest import API_KEY
from routiq.testing.browser_portal import DEV_ROLES, database_url
from routiq.testing.cliniko_stub import ClinikoStub
from routiq.worker import enqueue_scheduled_jobs, requeue_abandoned_jobs
from tenants.credentials import credential_set
from tenants.models import SyncLog, SyncStatus
from tenants.rls.binding import bind_organization

PATIENTS = 230  # three pages of 100
RECOVERY_LIMIT_SECONDS = 120


def start_worker(log_path) -> subprocess.Popen:
    """``manage.py rqworker sync --with-scheduler`` as production runs it, as the app role."""
    env = {**os.environ, "DATABASE_URL": database_url(*DEV_ROLES["app"]), "VENDOR_ALLOW_PRIVATE_NETWORKS": "1"}
    with open(log_path, "a") as log:
        return subprocess.Popen([sys.executable, "manage.py", "rqworker", "sync", "--with-scheduler",
                                 "--worker-ttl", "60"], env=env, cwd=settings.BASE_DIR, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def with_descendants(pid: int) -> list[int]:
    """The process and everything it started: RQ's work-horse runs in a session of its own (os.setsid), so a
    signal to the worker's process group would miss it."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rpartition(")")[2].split()[1])
            except OSError:
                continue
    found, frontier = [pid], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found.extend(children)
        frontier = children
    return found


def kill_machine(worker: subprocess.Popen) -> None:
    """SIGKILL the worker, its work-horse and its scheduler at once, as a lost machine would."""
    for pid in with_descendants(worker.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    worker.wait(timeout=10)


def wait_for(condition, *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.django_db(transaction=True)
def test_a_sigkilled_workers_sync_is_retried_within_two_minutes_and_resumes(org_a, empty_queue, tmp_path):
    queue = empty_queue("sync")
    workers = []
    with ClinikoStub(api_keys=[API_KEY], rate_limit_per_minute=None) as stub:
        stub.seed(patients=PATIENTS, appointments_per_patient=0, seed=31)
        with bind_organization(org_a):
            credential_set(organization=org_a, provider="cliniko", secret=API_KEY, base_url=stub.base_url)
        stub.schedule_fault("delay", at=2, seconds=120)  # the third page is held: the worker dies waiting
        try:
            job = enqueue_cliniko_sync(org_a, "patients")
            workers.append(start_worker(tmp_path / "worker.log"))
            wait_for(lambda: len(stub.requests) >= 3, seconds=60, what="the worker never asked for the third page")

            kill_machine(workers[0])
            killed_at = time.monotonic()
            stub.clear_faults()
            with bind_organization(org_a):
                written = Contact.objects.count()
            assert 100 < written <= 200  # two pages committed before the kill
            stub.reset_log()
            workers.append(start_worker(tmp_path / "worker.log"))  # the supervisor's restart

            def finished() -> bool:
                requeue_abandoned_jobs()  # what each tick of run_scheduler does
                enqueue_scheduled_jobs()
                return Job.fetch(job.id, connection=queue.connection).get_status() == JobStatus.FINISHED

            deadline = time.monotonic() + RECOVERY_LIMIT_SECONDS + 30
            while not finished():
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-4000:]
                time.sleep(settings.SCHEDULER_TICK_SECONDS)
            recovered_in = time.monotonic() - killed_at
        finally:
            for worker in workers:
                kill_machine(worker)

        assert recovered_in < RECOVERY_LIMIT_SECONDS, f"recovered in {recovered_in:.0f} s"
        with bind_organization(org_a):
            killed, resumed = SyncLog.objects.filter(provider="cliniko").order_by("started_at")
        assert killed.status == SyncStatus.FAILED and killed.error.startswith("interrupted")
        assert resumed.status == SyncStatus.SUCCEEDED and resumed.job_id == job.id
        assert resumed.fetched_count < PATIENTS  # from the checkpoint, not from the start
        assert_database_equals_server(org_a, stub)
