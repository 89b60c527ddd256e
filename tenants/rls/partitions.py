"""Monthly partitions of audit_logs: create this month's and the next ones before rows need them.

The SQL lives in one place, the ``create_audit_log_partition(month date)`` function installed by
tenants/migrations/0006: it creates ``audit_logs_yYYYYmMM`` (UTC month bounds) with ENABLE + FORCE Row Level
Security, the organization policy and the TRUNCATE guard, and does nothing when the partition is complete.
It is SECURITY DEFINER (it runs as the owner role), so the app role (the scheduled job) may call it.
A row whose month has no partition is not lost: it lands in ``audit_logs_default``.
"""

from __future__ import annotations

import datetime
import logging

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

logger = logging.getLogger(__name__)


class AuditPartitionError(RuntimeError):
    """A month's partition could not be created (the other months were still tried)."""


def first_of_month(day: datetime.date, months_later: int = 0) -> datetime.date:
    index = day.year * 12 + (day.month - 1) + months_later
    return datetime.date(index // 12, index % 12 + 1, 1)


def partition_name(month: datetime.date) -> str:
    return f"audit_logs_y{month.year:04d}m{month.month:02d}"


def ensure_audit_partitions(months_ahead: int = 3, today: datetime.date | None = None) -> list[str]:
    """Make sure the partitions for ``today``'s month (UTC) and the next ``months_ahead`` exist.

    Returns their names, created now or already present. Each month runs in its own savepoint, and a month
    that fails does not stop the later ones (e.g. PostgreSQL refuses a month whose rows already sit in
    audit_logs_default); the first failure is raised once every month has been tried.
    """
    if months_ahead < 0:
        raise ValueError("months_ahead must be zero or more")
    if today is None:
        today = timezone.now().date()  # aware UTC now: months are UTC months, like the partition bounds
    names: list[str] = []
    failures: list[tuple[datetime.date, DatabaseError]] = []
    for offset in range(months_ahead + 1):
        month = first_of_month(today, offset)
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT public.create_audit_log_partition(%s)", [month])
                names.append(cursor.fetchone()[0])
        except DatabaseError as exc:
            logger.error("audit log partition for %s not created: %s", month.isoformat(), exc)
            failures.append((month, exc))
    if failures:
        month, exc = failures[0]
        raise AuditPartitionError(f"audit log partition for {month.isoformat()} not created: {exc}") from exc
    return names
