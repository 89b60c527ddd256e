"""RQ entry points for the Cliniko sync: ids in, bind the organization, call the sync, nothing else."""

from __future__ import annotations

import logging

import django_rq
from django.conf import settings
from django.db import transaction
from rq import Retry, get_current_job
from rq.job import Job, JobStatus

from patients.clients.cliniko import ClinikoClient
from patients.services import active_patients_refresh
from patients.sync import RESOURCES, SyncAlreadyRunning
from patients.sync import sync_cliniko as run_cliniko_sync
from routiq.http import VendorAuthError, VendorClientError, VendorNotFound
from tenants.credentials import credential_get, credential_secret
from tenants.models import ApiCredential, Organization
from tenants.rls.binding import bind_organization, platform_access

logger = logging.getLogger(__name__)
SYNC_QUEUE = "sync"
# Everything else that fails a run — 5xx, timeouts, 429s beyond patience, a malformed page — raises, and RQ
# retries the job (which resumes from its checkpoint).
PERMANENT_ERRORS = (VendorAuthError, VendorClientError, VendorNotFound)
RETRY = Retry(max=3, interval=[60, 300, 900])


def cliniko_client_for(credential: ApiCredential) -> ClinikoClient:
    return ClinikoClient.for_key(
        credential_secret(credential),
        redis_client=django_rq.get_connection(SYNC_QUEUE),
        rate_per_minute=settings.CLINIKO_RATE_LIMIT_PER_MINUTE,
        contact_email=settings.CLINIKO_CONTACT_EMAIL,
        base_url=credential.base_url or settings.CLINIKO_API_URL or None,
    )


def sync_cliniko(organization_id: str, resource: str, full: bool = False) -> str:
    organization = Organization.objects.filter(pk=organization_id).first()
    if organization is None or not organization.is_active:
        return "skipped: organization missing or inactive"
    with bind_organization(organization):
        credential = credential_get(organization=organization, provider="cliniko")
        if credential is None:
            return "skipped: no Cliniko credential"
        job = get_current_job()
        try:
            log = run_cliniko_sync(
                organization=organization, resource=resource, client=cliniko_client_for(credential), full=full,
                job_id=job.id if job else "",
            )
        except SyncAlreadyRunning:
            return "skipped: already running"
        except PERMANENT_ERRORS as exc:
            return f"failed: {exc}"  # a bad key or a refused request: retrying cannot help; the log says why
    return f"succeeded: sync log {log.pk}"


def job_id_for(organization_id, resource: str) -> str:
    return f"cliniko-{organization_id}-{resource}"


def enqueue_cliniko_sync(organization: Organization, resource: str, *, full: bool = False,
                         depends_on: Job | None = None) -> Job | None:
    """Enqueue unless the same sync is already queued or running (deterministic job id)."""
    queue = django_rq.get_queue(SYNC_QUEUE)
    job_id = job_id_for(organization.pk, resource)
    existing = queue.fetch_job(job_id)
    if existing is not None and existing.get_status() in (JobStatus.QUEUED, JobStatus.STARTED,
                                                          JobStatus.DEFERRED, JobStatus.SCHEDULED):
        return None
    return queue.enqueue(sync_cliniko, str(organization.pk), resource, full, job_id=job_id, retry=RETRY,
                         depends_on=depends_on, job_timeout=3600, result_ttl=86400, failure_ttl=7 * 86400)


def enqueue_organization_sync(organization: Organization, *, full: bool = False) -> list[Job]:
    """Patients first, then appointments (which link to the patients), after the current transaction."""
    jobs: list[Job] = []

    def enqueue():
        previous = None
        for resource in RESOURCES:
            job = enqueue_cliniko_sync(organization, resource, full=full, depends_on=previous)
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
    with platform_access("scheduler: organizations with a Cliniko credential"):
        organization_ids = set(
            ApiCredential.objects.filter(provider="cliniko", organization__is_active=True).values_list(
                "organization_id", flat=True
            )
        )
    for organization in Organization.objects.filter(pk__in=organization_ids):
        enqueue_organization_sync(organization, full=full)
    return len(organization_ids)


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
