"""RQ entry points for the Chatwoot sync: ids in, bind the organization, run one resource, nothing else."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import transaction
from rq.job import Dependency, Job

from messaging.sync import PROVIDER, RESOURCES, chatwoot_client
from messaging.sync import sync_chatwoot as run_chatwoot_sync
from patients.jobs import schedule_dashboard_refresh_after
from routiq.jobs import (
    SYNC_QUEUE,
    enqueue_once,
    job_id_for,
    organizations_with_credential,
    run_bound_sync,
    spread_start,
)
from tenants.models import Organization

__all__ = ["enqueue_chatwoot_sync", "enqueue_full_syncs", "enqueue_incremental_syncs", "sync_chatwoot"]


def sync_chatwoot(organization_id: str, resource: str, full: bool = False) -> str:
    def run(organization: Organization, job_id: str):
        client = chatwoot_client(organization)
        if client is None:
            return "skipped: no complete Chatwoot credential"
        log = run_chatwoot_sync(organization=organization, resource=resource, client=client, full=full,
                                job_id=job_id)
        schedule_dashboard_refresh_after(organization, log)
        return log

    return run_bound_sync(organization_id, run)


def enqueue_chatwoot_sync(organization: Organization, *, full: bool = False, full_messages: bool | None = None,
                          after: Job | None = None, at: datetime | None = None) -> list[Job]:
    """Contacts, then conversations, then messages (each waits for the one before; the first for ``after``,
    e.g. the Cliniko patients sync its contacts match against), after the current transaction. A resource
    already queued or running is not queued again (deterministic job ids). ``full_messages`` (default:
    ``full``) re-reads every message of every conversation."""
    full_messages = full if full_messages is None else full_messages
    jobs: list[Job] = []

    def enqueue():
        # Run even if ``after`` failed: it only makes the first run better, never possible.
        previous: Job | Dependency | None = Dependency(jobs=[after], allow_failure=True) if after is not None else None
        for resource in RESOURCES:
            resource_full = full_messages if resource == "messages" else full
            job = enqueue_once(SYNC_QUEUE, sync_chatwoot, str(organization.pk), resource, resource_full,
                               job_id=job_id_for(PROVIDER, organization.pk, resource), depends_on=previous,
                               at=at if previous is None else None)
            if job is not None:
                jobs.append(job)
                previous = job

    transaction.on_commit(enqueue)
    return jobs


def enqueue_incremental_syncs() -> int:
    """The schedule's fan-out: every active organization with a Chatwoot credential."""
    return fan_out(full=False)


def enqueue_full_syncs() -> int:
    """Weekly: contacts edited at Chatwoot (its contact list has no "changed since") and every conversation's
    status and assignee. Messages stay incremental: a full pass is a request per conversation (hours for a
    large account under Chatwoot's rate limit), and new messages never hide below the message cursor; edits
    of old messages arrive by webhook (``manage.py sync_chatwoot --resource messages --full --now`` re-reads
    them all)."""
    return fan_out(full=True, full_messages=False)


def fan_out(*, full: bool, full_messages: bool | None = None) -> int:
    interval = settings.CHATWOOT_FULL_SYNC_INTERVAL_SECONDS if full else settings.CHATWOOT_SYNC_INTERVAL_SECONDS
    organizations = organizations_with_credential(PROVIDER)
    for organization in organizations:
        enqueue_chatwoot_sync(organization, full=full, full_messages=full_messages,
                              at=spread_start(organization.pk, interval))
    return len(organizations)
