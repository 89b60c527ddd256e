"""What every vendor's sync jobs share: deterministic job ids, bounded RQ retries, permanent vs retryable
vendor errors, the bound run, and the scheduler's fan-out.

A vendor's jobs module stays "ids in, bind, call one sync":

    def sync_chatwoot(organization_id, resource, full=False):
        return run_bound_sync(organization_id, lambda organization, job_id: ...run_sync(...)...)

    enqueue_once(SYNC_QUEUE, sync_chatwoot, str(org.pk), resource, job_id=job_id_for("chatwoot", org.pk, resource))
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import django_rq
from django.utils import timezone
from rq import Retry, get_current_job
from rq.job import Dependency, Job, JobStatus

from billing.gating import sync_pause_reason
from routiq.http import VendorAuthError, VendorClientError, VendorNotFound
from routiq.sync import SyncAlreadyRunning
from tenants.models import ApiCredential, Organization, SyncLog
from tenants.rls.binding import bind_organization, platform_access

logger = logging.getLogger(__name__)

SYNC_QUEUE = "sync"
# A bad key, a refused request, a missing resource: retrying cannot help, and the sync log says why.
# Everything else that fails a run (5xx, timeouts, 429s beyond patience, a malformed page) raises, and RQ
# retries the job, which resumes from its checkpoint.
PERMANENT_ERRORS = (VendorAuthError, VendorClientError, VendorNotFound)
RETRY = Retry(max=3, interval=[60, 300, 900])
# A job with one of these statuses will run (again): enqueueing the same id would pile up a duplicate.
PENDING = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED)


def job_id_for(provider: str, organization_id: Any, resource: str) -> str:
    """One id per (provider, organization, resource): a schedule tick cannot queue a second copy."""
    return f"{provider}-{organization_id}-{resource}"


def enqueue_once(queue_name: str, func: Callable, *args: Any, job_id: str, retry: Retry | None = RETRY,
                 depends_on: Job | Dependency | None = None, job_timeout: int = 3600, at: datetime | None = None,
                 **options: Any) -> Job | None:
    """Enqueue unless a job with this id is already queued, running, deferred or scheduled (then None).

    ``at``: run it then (RQ's scheduler, ``rqworker --with-scheduler``) instead of now.
    Call it after commit (``transaction.on_commit``): a job must never see the transaction that queued it
    still open, nor run for one that rolled back.
    """
    queue = django_rq.get_queue(queue_name)
    existing = queue.fetch_job(job_id)
    if existing is not None and existing.get_status() in PENDING:
        return None
    options.setdefault("result_ttl", 86400)
    options.setdefault("failure_ttl", 7 * 86400)
    if at is not None:
        return queue.enqueue_at(at, func, *args, job_id=job_id, retry=retry, depends_on=depends_on,
                                job_timeout=job_timeout, **options)
    return queue.enqueue(func, *args, job_id=job_id, retry=retry, depends_on=depends_on, job_timeout=job_timeout,
                         **options)


def spread_start(organization_id: Any, interval_seconds: int, now: datetime | None = None) -> datetime:
    """When an organization's periodic sync starts: now plus a stable offset taken from its id, within the
    first nine tenths of the interval. Thousands of organizations are spread over the interval instead of
    queued at once, each keeps its place period after period (its vendor sees a steady rhythm), and a slow
    run still ends before the next tick."""
    digest = hashlib.sha256(str(organization_id).encode()).digest()
    window = max(1, interval_seconds * 9 // 10)
    return (now or timezone.now()) + timedelta(seconds=int.from_bytes(digest[:8], "big") % window)


def enqueue_for_each_organization(queue_name: str, func: Callable, *, job_id_prefix: str, **options: Any) -> int:
    """A daily fan-out: ``func(organization_id)`` once per active organization, job id ``<prefix>-<id>``, so one
    failing schema stops no other and a tick cannot queue a second copy. Returns how many organizations."""
    organization_ids = list(Organization.objects.filter(is_active=True).values_list("pk", flat=True))
    options.setdefault("retry", None)
    for organization_id in organization_ids:
        enqueue_once(queue_name, func, str(organization_id), job_id=f"{job_id_prefix}-{organization_id}", **options)
    return len(organization_ids)


def run_bound_sync(organization_id: str, run: Callable[[Organization, str], SyncLog | str]) -> str:
    """The body of a sync job: re-fetch the organization, bind it, call ``run(organization, job_id)``.

    Returns the job's result text: "succeeded: sync log N", "skipped: <why>" (organization gone or inactive,
    another run holds the lock — it will cover the same ground — or whatever ``run`` returned as a string,
    e.g. no credential), or "failed: <error>" for a permanent vendor error, which is not retried. Other errors
    raise so that RQ retries the job.
    """
    def bound_run(organization: Organization) -> str:
        job = get_current_job()
        try:
            result = run(organization, job.id if job else "")
        except SyncAlreadyRunning:
            return "skipped: already running"
        except PERMANENT_ERRORS as exc:
            return f"failed: {exc}"
        return result if isinstance(result, str) else f"succeeded: sync log {result.pk}"

    return for_active_organization(organization_id, bound_run)


def for_active_organization(organization_id: str, call: Callable[[Organization], str]) -> str:
    """A job's body: re-fetch the organization, return early if it is gone or inactive, else
    ``call(organization)`` with it bound."""
    organization = Organization.objects.filter(pk=organization_id, is_active=True).first()
    if organization is None:
        return "skipped: organization missing or inactive"
    with bind_organization(organization):
        return call(organization)


def organizations_with_credential(provider: str) -> list[Organization]:
    """The scheduler's fan-out: every active organization with a credential for ``provider`` whose syncs
    are not paused by billing (billing/gating.py)."""
    with platform_access(f"scheduler: organizations with a {provider} credential"):
        organization_ids = set(
            ApiCredential.objects.filter(provider=provider, organization__is_active=True).values_list(
                "organization_id", flat=True
            )
        )
    organizations = list(Organization.objects.filter(pk__in=organization_ids))
    allowed = [organization for organization in organizations if sync_pause_reason(organization) is None]
    if len(allowed) < len(organizations):
        logger.info("scheduler: %s %s sync(s) skipped, paused by billing: %s", len(organizations) - len(allowed),
                    provider, sorted(str(o.pk) for o in organizations if o not in allowed))
    return allowed
