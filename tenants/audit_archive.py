"""Archival of audit logs past the retention: whole months leave the database for compressed files.

The audit log is the compliance record (HIPAA §164.312(b), APP 11), so it stays in the database for
``AUDIT_LOG_RETENTION_YEARS`` (default and floor 7, the legal minimum; settings refuse less) and is then moved,
never simply deleted, to ``AUDIT_ARCHIVE_DIR`` as one gzip COPY file per month with a manifest beside it
(routiq/archives.py). The database enforces the floor on its own: ``drop_archived_audit_log_partition``
(tenants/migrations/0014) refuses a month younger than 7 years whatever its caller asks.

A month's rows belong to every organization, so the job runs inside ``platform_access`` (the platform role
reads all of them; the app role sees only its own). In one transaction it moves any of the month's rows still
waiting in the default partition into the month's partition (``create_audit_log_partition``), writes the file,
and calls the drop function with the number of rows written: the function detaches the month, counts it and
drops it only if the count matches. A failure anywhere rolls everything back; the month stays.

``restore_audit_archive(manifest)`` (``manage.py restore_audit_archive``) puts a month back: the partition is
re-created and the rows inserted as the platform role, checked against the manifest. A restored month is
archived again by the next run, so restore into a copy of the database when you only need to read it.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone
from psycopg import sql

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
from tenants.rls.binding import platform_access, unbind_all, write_alias
from tenants.rls.partitions import first_of_month, partition_name

logger = logging.getLogger(__name__)
FORMAT = "routiq-audit-archive/1"
LEGAL_MINIMUM_YEARS = 7  # also the floor inside drop_archived_audit_log_partition (tenants/migrations/0014)
# audit_logs' columns as tenants/migrations/0006 created them (a restore names them, so the order is fixed).
COLUMNS = ("id", "organization_id", "actor_id", "actor_label", "action", "object_type", "object_id", "ip_address",
           "user_agent", "changes", "created_at")


def archival_cutoff(today: datetime.date | None = None) -> datetime.date:
    """Months that end on or before this day (UTC) are past the retention."""
    today = today or timezone.now().date()
    years = max(settings.AUDIT_LOG_RETENTION_YEARS, LEGAL_MINIMUM_YEARS)
    try:
        return today.replace(year=today.year - years)
    except ValueError:  # 29 February
        return today.replace(year=today.year - years, day=28)


def months_past_retention(cursor, today: datetime.date | None = None) -> list[datetime.date]:
    """Every month (UTC) with audit rows, in a partition or still in the default one, that ended by the cutoff."""
    cutoff = datetime.datetime.combine(archival_cutoff(today), datetime.time(), tzinfo=datetime.UTC)
    cursor.execute(
        "SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC')::date FROM audit_logs "
        "WHERE created_at < %s ORDER BY 1",
        [cutoff],
    )
    return [month for (month,) in cursor.fetchall()
            if datetime.datetime.combine(first_of_month(month, 1), datetime.time(), tzinfo=datetime.UTC) <= cutoff]


def archive_audit_month(cursor, month: datetime.date) -> Archive:
    """One month to ``AUDIT_ARCHIVE_DIR/audit_logs_yYYYYmMM.copy.gz`` (+ ``.json``), then its partition dropped.
    Runs in the caller's transaction, as the platform role."""
    name = partition_name(month)
    directory = private_directory(Path(settings.AUDIT_ARCHIVE_DIR))
    data, manifest = directory / f"{name}.copy.gz", directory / f"{name}.json"
    cursor.execute("SELECT public.create_audit_log_partition(%s)", [month])  # moves rows waiting in the default
    columns = sql.SQL(", ").join(sql.Identifier(column) for column in COLUMNS)
    query = sql.SQL("SELECT {} FROM {} ORDER BY id").format(columns, sql.Identifier("public", name))
    rows = copy_out_to_file(cursor, query, data)
    write_manifest(manifest, {
        "format": FORMAT, "table": "audit_logs", "month": month.isoformat(), "columns": list(COLUMNS),
        "rows": rows, "data": data.name, "sha256": sha256(data), "archived_at": timezone.now().isoformat(),
    })
    cursor.execute("SELECT public.drop_archived_audit_log_partition(%s, %s)", [month, rows])
    logger.info("audit logs archived month=%s rows=%s file=%s", month, rows, data)
    return Archive(month=month, rows=rows, data=data, manifest=manifest)


def archive_old_audit_logs(today: datetime.date | None = None) -> list[Archive]:
    """Every month past the retention, oldest first, each in a transaction of its own."""
    unbind_all()
    archives = []
    with platform_access("archive audit logs past the retention"):
        alias = write_alias()
        with connections[alias].cursor() as cursor:
            months = months_past_retention(cursor, today)
        for month in months:
            with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
                archives.append(archive_audit_month(cursor, month))
    return archives


def restore_audit_archive(manifest_path: Path) -> int:
    """Put an archived month back into audit_logs; returns the rows restored."""
    manifest, data = read_manifest(Path(manifest_path), format=FORMAT, columns=COLUMNS)
    month = datetime.date.fromisoformat(manifest["month"])
    name = partition_name(month)
    columns = sql.SQL(", ").join(sql.Identifier(column) for column in COLUMNS)
    unbind_all()
    with platform_access("restore archived audit logs"):
        alias = write_alias()
        with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
            cursor.execute("SELECT public.create_audit_log_partition(%s)", [month])
            cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", name)))
            if cursor.fetchone()[0]:
                raise ArchiveError(f"{name} already holds audit rows: not restored")
            cursor.execute("CREATE TEMP TABLE restored_audit_logs (LIKE public.audit_logs) ON COMMIT DROP")
            copy_in_from_file(cursor, sql.Identifier("restored_audit_logs"), COLUMNS, data)
            cursor.execute(sql.SQL("INSERT INTO public.audit_logs ({}) SELECT {} FROM restored_audit_logs").format(
                columns, columns))
            cursor.execute("DROP TABLE restored_audit_logs")  # ON COMMIT comes late inside an outer transaction
            cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", name)))
            restored = cursor.fetchone()[0]
            if restored != manifest["rows"]:
                raise ArchiveError(f"restored {restored} rows, the manifest says {manifest['rows']}")
    logger.info("audit logs restored month=%s rows=%s", month, restored)
    return restored
