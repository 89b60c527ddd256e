"""Retention of messages: months past an organization's retention leave the database for compressed files.

A month of messages is one partition (messaging/migrations/0007), so archiving it is: in one transaction,
take a SHARE lock on the partition (reads go on, writes to that month wait), COPY its rows into a gzip file
under ``MESSAGE_ARCHIVE_DIR/<schema>/`` (written to a temporary name, flushed to disk, then renamed) with a
manifest beside it (organization, month, columns, row count, SHA-256 of the file), then call the schema's
``drop_archived_messages_partition(month, rows)`` (messaging/migrations/0010: SECURITY DEFINER; it checks the
bound organization and that the partition still holds exactly the rows written, then detaches and drops it).
If anything fails the transaction rolls back and the partition stays; a file left by a failed run is
overwritten by the next one. Nothing is deleted from the database before its file is complete on disk.

The retention is the organization's ``message_retention_months``, else the ``MESSAGE_RETENTION_MONTHS``
setting; 0 keeps everything. A month is archived once all of it is older than the retention (UTC months, like
the partitions). Rows still waiting in ``messages_default`` (old history synced before its month had a
partition) are first given their month's partition, which moves them there, so they are archived like the
rest; only rows dated before 2000, which no partition takes, stay. Conversations keep their counters
(message_count counts archived messages too).

``restore_messages_archive(manifest)`` (``manage.py restore_archive <manifest>``) puts a month back: the
partition is re-created by ``create_messages_partition`` and the rows copied back (COPY into a temporary table,
then INSERT through ``messages`` under its policy; its triggers rebuild the search documents), in one
transaction, checked against the manifest. A restored month
older than the retention is archived again by the next run unless the retention is raised first.

Audit logs are archived by their own job, past a legal minimum the database enforces
(tenants/audit_archive.py).
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from messaging.partitions import ensure_message_partitions
from routiq.archives import (
    Archive,
    ArchiveError,
    copy_in_from_file,
    copy_out_to_file,
    private_directory,
    read_manifest,
    sha256,
    write_manifest,
)
from routiq.jobs import enqueue_for_each_organization, for_active_organization
from tenants.models import Organization
from tenants.rls.binding import bind_organization, require_organization_id
from tenants.rls.partitions import first_of_month, partition_name

logger = logging.getLogger(__name__)
QUEUE = "default"
FORMAT = "routiq-messages-archive/1"
# messages' columns as messaging/migrations/0007 created them (a restore names them, so the order is fixed).
COLUMNS = ("created_at", "updated_at", "id", "provider", "external_id", "direction", "content", "content_type",
           "sent_at", "conversation_id", "organization_id", "attachments", "private", "sender_name")


def retention_months(organization: Organization) -> int:
    if organization.message_retention_months is not None:
        return organization.message_retention_months
    return settings.MESSAGE_RETENTION_MONTHS


def archive_directory(organization: Organization) -> Path:
    return Path(settings.MESSAGE_ARCHIVE_DIR) / organization.schema_name


def months_past_retention(organization: Organization, *, today: datetime.date | None = None) -> list[datetime.date]:
    """The months (UTC) with a partition whose whole month is older than the retention; [] when it is 0."""
    months = retention_months(organization)
    if months <= 0:
        return []
    today = today or timezone.now().date()
    cutoff = first_of_month(today, -months)  # a month is due once its end is at least `months` months back
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass AND c.relname ~ '^messages_y[0-9]{4}m[0-9]{2}$'",
            [f'"{organization.schema_name}".messages'],
        )
        names = [name for (name,) in cursor.fetchall()]
    due = []
    for name in names:
        month = datetime.date(int(name[10:14]), int(name[15:17]), 1)
        if first_of_month(month, 1) <= cutoff:
            due.append(month)
    return sorted(due)


def archive_messages_month(*, organization: Organization, month: datetime.date) -> Archive:
    """Write the month's messages to ``<dir>/<schema>/messages_yYYYYmMM.copy.gz`` (+ ``.json``), then drop the
    partition; one transaction. The organization must be the bound one."""
    if require_organization_id() != str(organization.pk):
        raise ArchiveError("bind the organization whose messages are archived")
    name = partition_name(month, "messages")
    directory = private_directory(archive_directory(organization))
    data, manifest = directory / f"{name}.copy.gz", directory / f"{name}.json"
    table = sql.Identifier(organization.schema_name, name)
    columns = sql.SQL(", ").join(sql.Identifier(column) for column in COLUMNS)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(table))
        rows = copy_out_to_file(cursor, sql.SQL("SELECT {} FROM {} ORDER BY id").format(columns, table), data)
        write_manifest(manifest, {
            "format": FORMAT, "organization_id": str(organization.pk), "schema": organization.schema_name,
            "table": "messages", "month": month.isoformat(), "columns": list(COLUMNS), "rows": rows,
            "data": data.name, "sha256": sha256(data), "archived_at": timezone.now().isoformat(),
        })
        cursor.execute(
            sql.SQL("SELECT {}(%s, %s)").format(
                sql.Identifier(organization.schema_name, "drop_archived_messages_partition")),
            [month, rows],
        )
    logger.info("messages archived organization_id=%s month=%s rows=%s file=%s", organization.pk, month, rows, data)
    return Archive(month=month, rows=rows, data=data, manifest=manifest)


def archive_old_messages(*, organization: Organization, today: datetime.date | None = None) -> list[Archive]:
    """Every month past the organization's retention, oldest first (rows waiting in the default partition
    included: their months are partitioned first)."""
    if retention_months(organization) > 0:
        ensure_message_partitions(organization=organization, months_ahead=0, today=today)
    return [archive_messages_month(organization=organization, month=month)
            for month in months_past_retention(organization, today=today)]


def restore_messages_archive(manifest_path: Path) -> tuple[Organization, int]:
    """Put an archived month back into its organization's messages; returns the organization and the rows."""
    manifest, data = read_manifest(Path(manifest_path), format=FORMAT, columns=COLUMNS)
    organization = Organization.objects.filter(pk=manifest["organization_id"], is_active=True).first()
    if organization is None or organization.schema_name != manifest["schema"]:
        raise ArchiveError("the archive's organization is missing, inactive or in another schema")
    month = datetime.date.fromisoformat(manifest["month"])
    columns = sql.SQL(", ").join(sql.Identifier(column) for column in COLUMNS)
    with bind_organization(organization), transaction.atomic():
        ensure_message_partitions(organization=organization, months_ahead=0, today=month)
        with connection.cursor() as cursor:
            table = sql.Identifier(organization.schema_name, partition_name(month, "messages"))
            cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
            if cursor.fetchone()[0]:
                raise ArchiveError(f"{partition_name(month, 'messages')} already holds messages: not restored")
            # COPY cannot write a table under RLS: the rows go to a temporary table first, then into messages
            # by INSERT, checked by its policy (rows of another organization would be refused).
            messages = sql.Identifier(organization.schema_name, "messages")
            cursor.execute(sql.SQL("CREATE TEMP TABLE restored_messages (LIKE {}) ON COMMIT DROP").format(messages))
            copy_in_from_file(cursor, sql.Identifier("restored_messages"), COLUMNS, data)
            cursor.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM restored_messages ORDER BY id").format(
                messages, columns, columns))
            cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
            restored = cursor.fetchone()[0]
        if restored != manifest["rows"]:
            raise ArchiveError(f"restored {restored} rows, the manifest says {manifest['rows']}")
    logger.info("messages restored organization_id=%s month=%s rows=%s", organization.pk, month, restored)
    return organization, restored


def archive_messages_for(organization_id: str) -> str:
    """One organization's archival (a job: id in, bind, call)."""
    def archive(organization: Organization) -> str:
        archives = archive_old_messages(organization=organization)
        return f"archived {len(archives)} months, {sum(a.rows for a in archives)} messages"

    return for_active_organization(organization_id, archive)


def archive_old_messages_everywhere() -> int:
    """The schedule's fan-out (daily, ROUTIQ_SCHEDULE "message-archival"): one job per active organization."""
    return enqueue_for_each_organization(QUEUE, archive_messages_for, job_id_prefix="message-archival",
                                         job_timeout=3600)
