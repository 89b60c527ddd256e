"""RQ entry points for the Cliniko sync: ids in, bind the organization, call the sync, nothing else."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import django_rq
from django.conf import settings
from django.db import transaction
from rq.job import Job

from patients.clients.cliniko import ClinikoClient
from patients.dashboard import dashboard_refresh
from patients.services import active_patients_refresh
from patients.sync import RESOURCES
from patients.sync import sync_cliniko as run_cliniko_sync
from routiq.jobs import (
    PERMANENT_ERRORS,
    RETRY,
    SYNC_QUEUE,
    enqueue_for_each_organization,
    enqueue_once,
    for_active_organization,
    organizations_with_credential,
    run_bound_sync,
    spread_start,
)
from routiq.jobs import job_id_for as vendor_job_id
from tenants.credentials import credential_get, credential_secret
from tenants.models import ApiCredential, Organization, SyncLog
from tenants.rls.binding import bind_organization

logger = logging.getLogger(__name__)
PROVIDER = "cliniko"

__all__ = ["PERMANENT_ERRORS", "RETRY", "SYNC_QUEUE", "enqueue_cliniko_sync", "enqueue_organization_sync",
           "sync_cliniko"]


def cliniko_client_for(credential: ApiCredential) -> ClinikoClient:
    return ClinikoClient.for_key(
        credential_secret(credential),
        redis_client=django_rq.get_connection(SYNC_QUEUE),
        rate_per_minute=settings.CLINIKO_RATE_LIMIT_PER_MINUTE,
        contact_email=settings.CLINIKO_CONTACT_EMAIL,
        base_url=credential.base_url or settings.CLINIKO_API_URL or None,
    )


def sync_cliniko(organization_id: str, resource: str, full: bool = False) -> str:
    def run(organization: Organization, job_id: str):
        credential = credential_get(organization=organization, provider=PROVIDER)
        if credential is None:
            return "skipped: no Cliniko credential"
        log = run_cliniko_sync(organization=organization, resource=resource,
                               client=cliniko_client_for(credential), full=full, job_id=job_id)
        schedule_dashboard_refresh_after(organization, log)
        return log

    return run_bound_sync(organization_id, run)


def job_id_for(organization_id, resource: str) -> str:
    return vendor_job_id(PROVIDER, organization_id, resource)


def enqueue_cliniko_sync(organization: Organization, resource: str, *, full: bool = False,
                         depends_on: Job | None = None, at: datetime | None = None) -> Job | None:
    """Enqueue unless the same sync is already queued, scheduled or running (deterministic job id)."""
    return enqueue_once(SYNC_QUEUE, sync_cliniko, str(organization.pk), resource, full,
                        job_id=job_id_for(organization.pk, resource), depends_on=depends_on, at=at)


def enqueue_organization_sync(organization: Organization, *, full: bool = False,
                              at: datetime | None = None) -> list[Job]:
    """Patients first (now, or ``at``), then appointments (which link to the patients), after the current
    transaction."""
    jobs: list[Job] = []

    def enqueue():
        previous = None
        for resource in RESOURCES:
            job = enqueue_cliniko_sync(organization, resource, full=full, depends_on=previous,
                                       at=at if previous is None else None)
            if job is not None:
                jobs.append(job)
                previous = job

    transaction.on_commit(enqueue)
    return jobs


def enqueue_incremental_syncs() -> int:
    """The schedule's fan-out: every active organization with a Cliniko credential."""
    return fan_out(full=False)


def enqueue_full_syncs() -> int:
    """Weekly reconciliation. Cliniko pages by offset: a record that moves while a run pages past it can be
    skipped by that run, and an incremental run never looks below its high-water mark again."""
    return fan_out(full=True)


def fan_out(*, full: bool) -> int:
    interval = settings.CLINIKO_FULL_SYNC_INTERVAL_SECONDS if full else settings.CLINIKO_SYNC_INTERVAL_SECONDS
    organizations = organizations_with_credential(PROVIDER)
    for organization in organizations:
        enqueue_organization_sync(organization, full=full, at=spread_start(organization.pk, interval))
    return len(organizations)


def refresh_active_patients(organization_id: str) -> int:
    """Nightly: 'active' depends on today's date, not only on new appointments."""
    organization = Organization.objects.filter(pk=organization_id, is_active=True).first()
    if organization is None:
        return 0
    with bind_organization(organization):
        return active_patients_refresh(organization=organization)


def enqueue_active_patient_refreshes() -> int:
    queue = django_rq.get_queue("default")
    organizations = list(Organization.objects.filter(is_active=True).values_list("pk", flat=True))
    for organization_id in organizations:
        queue.enqueue(refresh_active_patients, str(organization_id), job_id=f"active-patients-{organization_id}")
    return len(organizations)


# --- the dashboard's figures ------------------------------------------------------------------------------

DASHBOARD_QUEUE = "default"


def refresh_dashboard(organization_id: str) -> str:
    """Recompute one organization's dashboard figures (the materialized views of its schema)."""
    def refresh(organization: Organization) -> str:
        return f"refreshed: as of {dashboard_refresh(organization=organization).isoformat()}"

    return for_active_organization(organization_id, refresh)


def dashboard_job_id(organization_id, window: int) -> str:
    return f"dashboard-{organization_id}-{window}"


def schedule_dashboard_refresh(organization: Organization, *, now: datetime | None = None) -> Job | None:
    """Debounced per organization: every sync that changed something in one window of
    DASHBOARD_REFRESH_DEBOUNCE_SECONDS asks for the same job (the window is in its id), run once at the
    window's end. A sync that ends while that job runs is in the next window, so its changes get the next job
    (a job's snapshot is taken when it starts): nothing is missed, and a busy clinic is refreshed at most once
    a window. Needs RQ's scheduler (``rqworker --with-scheduler``)."""
    seconds = settings.DASHBOARD_REFRESH_DEBOUNCE_SECONDS
    now = now or datetime.now(UTC)
    window = int(now.timestamp()) // seconds
    run_at = datetime.fromtimestamp((window + 1) * seconds, UTC)
    return enqueue_once(DASHBOARD_QUEUE, refresh_dashboard, str(organization.pk),
                        job_id=dashboard_job_id(organization.pk, window), at=run_at, retry=None,
                        job_timeout=1800, result_ttl=seconds * 2)


def schedule_dashboard_refresh_after(organization: Organization, log: SyncLog | str) -> None:
    """After a sync run: a refresh if it created, changed or removed anything (after commit)."""
    if isinstance(log, SyncLog) and (log.created_count or log.updated_count or log.archived_count):
        transaction.on_commit(lambda: schedule_dashboard_refresh(organization))


def enqueue_dashboard_refreshes() -> int:
    """Nightly (ROUTIQ_SCHEDULE "dashboard-nightly"): figures that depend on the date ("in the last 30
    days", today's row) move even when no sync changed anything."""
    return enqueue_for_each_organization(DASHBOARD_QUEUE, refresh_dashboard, job_id_prefix="dashboard-nightly",
                                         job_timeout=1800)
