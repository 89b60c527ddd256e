"""Monthly partitions, created before rows need them: one Python entry point for every partitioned table.

Each partitioned table has one SQL function that creates a month's partition (UTC month bounds) with
ENABLE + FORCE Row Level Security and the table's policies, and does nothing when the partition is complete.
The functions are SECURITY DEFINER (they run as the owner role, which owns the tables), so the scheduled
jobs, which run as the app role, may call them; each takes a date only, so no caller-supplied text reaches
the DDL. A row whose month has no partition is not lost: it lands in the table's default partition.

* ``public.create_audit_log_partition(month)`` (tenants/migrations/0006, 0008) for ``audit_logs``;
* ``<organization schema>.create_messages_partition(month)`` (messaging/migrations/0007) for each
  organization's ``messages`` (see messaging/partitions.py).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable

from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from psycopg import sql

logger = logging.getLogger(__name__)


class PartitionError(RuntimeError):
    """A month's partition could not be created (the other months were still tried)."""


class AuditPartitionError(PartitionError):
    """An audit_logs partition could not be created."""


def first_of_month(day: datetime.date, months_later: int = 0) -> datetime.date:
    index = day.year * 12 + (day.month - 1) + months_later
    return datetime.date(index // 12, index % 12 + 1, 1)


def partition_name(month: datetime.date, table: str = "audit_logs") -> str:
    return f"{table}_y{month.year:04d}m{month.month:02d}"


def months_from(today: datetime.date | None, months_ahead: int) -> list[datetime.date]:
    """``today``'s month (UTC when not given) and the next ``months_ahead``."""
    if months_ahead < 0:
        raise ValueError("months_ahead must be zero or more")
    if today is None:
        today = timezone.now().date()  # aware UTC now: months are UTC months, like the partition bounds
    return [first_of_month(today, offset) for offset in range(months_ahead + 1)]


def ensure_partitions(
    *, schema: str, function: str, months: Iterable[datetime.date], label: str,
    error: type[PartitionError] = PartitionError,
) -> list[str]:
    """Call ``schema.function(month)`` for each month; returns the partitions' names (created or present).

    Each month runs in its own savepoint, and a month that fails does not stop the later ones (e.g. the
    function refuses a month out of range, or a lock wait times out); the first failure is raised once
    every month has been tried.
    """
    statement = sql.SQL("SELECT {}(%s)").format(sql.Identifier(schema, function))
    names: list[str] = []
    failures: list[tuple[datetime.date, DatabaseError]] = []
    for month in sorted(set(months)):
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(statement, [month])
                names.append(cursor.fetchone()[0])
        except DatabaseError as exc:
            logger.error("%s partition for %s not created: %s", label, month.isoformat(), exc)
            failures.append((month, exc))
    if failures:
        month, failure = failures[0]
        raise error(f"{label} partition for {month.isoformat()} not created: {failure}") from failure
    return names


def ensure_audit_partitions(months_ahead: int = 3, today: datetime.date | None = None) -> list[str]:
    """Make sure the audit_logs partitions for ``today``'s month (UTC) and the next ``months_ahead`` exist."""
    return ensure_partitions(
        schema="public", function="create_audit_log_partition", months=months_from(today, months_ahead),
        label="audit log", error=AuditPartitionError,
    )
