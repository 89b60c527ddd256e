"""RQ entry points for the Chatwoot sync: ids in, bind the organization, run one resource, nothing else."""

from __future__ import annotations

from django.db import transaction
from rq.job import Dependency, Job

from messaging.sync import PROVIDER, RESOURCES, chatwoot_client
from messaging.sync import sync_chatwoot as run_chatwoot_sync
from routiq.jobs import SYNC_QUEUE, enqueue_once, job_id_for, organizations_with_credential, run_bound_sync
from tenants.models import Organization

__all__ = ["enqueue_chatwoot_sync", "enqueue_full_syncs", "enqueue_incremental_syncs", "sync_chatwoot"]


def sync_chatwoot(organization_id: str, resource: str, full: bool = False) -> str:
    def run(organization: Organization, job_id: str):
        client = chatwoot_client(organization)
        if client is None:
            return "skipped: no complete Chatwoot credential"
        return run_chatwoot_sync(organization=organization, resource=resource, client=client, full=full,
                                 job_id=job_id)

    return run_bound_sync(organization_id, run)


def enqueue_chatwoot_sync(organization: Organization, *, full: bool = False, after: Job | None = None) -> list[Job]:
    """Contacts, then conversations, then messages (each waits for the one before; the first for ``after``,
    e.g. the Cliniko patients sync its contacts match against), after the current transaction. A resource
    already queued or running is not queued again (deterministic job ids)."""
    jobs: list[Job] = []

    def enqueue():
        # Run even if ``after`` failed: it only makes the first run better, never possible.
        previous = Dependency(jobs=[after], allow_failure=True) if after is not None else None
        for resource in RESOURCES:
            job = enqueue_once(SYNC_QUEUE, sync_chatwoot, str(organization.pk), resource, full,
                               job_id=job_id_for(PROVIDER, organization.pk, resource), depends_on=previous)
            if job is not None:
                jobs.append(job)
                previous = job

    transaction.on_commit(enqueue)
    return jobs


def enqueue_incremental_syncs() -> int:
    """The schedule's fan-out: every active organization with a Chatwoot credential."""
    return fan_out(full=False)


def enqueue_full_syncs() -> int:
    """Weekly: contacts edited at Chatwoot (its contact list has no "changed since") and anything an
    incremental walk could not see (a conversation deleted while a run paged past it)."""
    return fan_out(full=True)


def fan_out(*, full: bool) -> int:
    organizations = organizations_with_credential(PROVIDER)
    for organization in organizations:
        enqueue_chatwoot_sync(organization, full=full)
    return len(organizations)
