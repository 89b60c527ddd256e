"""Monthly partitions of each organization's messages, created ahead by a scheduled job.

The SQL is the schema's ``create_messages_partition(month)`` (messaging/migrations/0007), called through
the one entry point every partitioned table uses (tenants.rls.partitions.ensure_partitions). Besides this
month and the next ones, the job also creates the months that have rows waiting in ``messages_default``:
a sync of old Chatwoot history writes months that never had a partition, and the function moves those rows
out of the default partition into the new month's.
"""

from __future__ import annotations

import datetime
import logging

from django.db import connection

from routiq.jobs import enqueue_once
from tenants.models import Organization
from tenants.rls.binding import bind_organization, require_organization_id
from tenants.rls.partitions import PartitionError, ensure_partitions, months_from

logger = logging.getLogger(__name__)
QUEUE = "default"
# The function refuses months before this; a message older than that stays in the default partition.
OLDEST_MONTH = datetime.date(2000, 1, 1)


class MessagePartitionError(PartitionError):
    """A messages partition could not be created."""


def months_waiting_in_default() -> list[datetime.date]:
    """Months (UTC) of the rows in messages_default that a partition could take."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT date_trunc('month', sent_at AT TIME ZONE 'UTC')::date FROM messages_default "
            "WHERE sent_at >= %s AND sent_at < now() + interval '119 months' ORDER BY 1",
            [datetime.datetime.combine(OLDEST_MONTH, datetime.time(), tzinfo=datetime.UTC)],
        )
        return [month for (month,) in cursor.fetchall()]


def ensure_message_partitions(
    *, organization: Organization, months_ahead: int = 3, today: datetime.date | None = None
) -> list[str]:
    """This month's and the next ``months_ahead`` partitions of the bound organization's messages, and a
    partition for every month with rows in the default partition. Idempotent; returns the names."""
    if require_organization_id() != str(organization.pk):
        raise MessagePartitionError("bind the organization whose partitions are made")
    months = months_from(today, months_ahead) + months_waiting_in_default()
    return ensure_partitions(
        schema=organization.schema_name, function="create_messages_partition", months=months,
        label=f"messages ({organization.schema_name})", error=MessagePartitionError,
    )


def create_message_partitions_for(organization_id: str, months_ahead: int = 3) -> str:
    """One organization's partitions (a job: id in, bind, call)."""
    organization = Organization.objects.filter(pk=organization_id, is_active=True).first()
    if organization is None:
        return "skipped: organization missing or inactive"
    with bind_organization(organization):
        names = ensure_message_partitions(organization=organization, months_ahead=months_ahead)
    return f"messages partitions present: {', '.join(names)}"


def job_id_for(organization_id) -> str:
    return f"message-partitions-{organization_id}"


def create_message_partitions(months_ahead: int = 3) -> int:
    """The schedule's fan-out (daily, ROUTIQ_SCHEDULE "message-partitions"): one job per active organization,
    so one failing schema neither stops the others nor makes one worker load every schema's catalog.

    A missed run costs nothing: three months of partitions already exist, and rows for a month without one
    go to messages_default until the next run moves them.
    """
    organization_ids = list(Organization.objects.filter(is_active=True).values_list("pk", flat=True))
    for organization_id in organization_ids:
        enqueue_once(QUEUE, create_message_partitions_for, str(organization_id), months_ahead,
                     job_id=job_id_for(organization_id), retry=None, job_timeout=600)
    logger.info("message partition jobs enqueued for %s organizations", len(organization_ids))
    return len(organization_ids)
